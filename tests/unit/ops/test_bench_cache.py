"""The cache bench's pure parts: the Zipf draw and the on/off table (no stack, no timing)."""

from collections import Counter

from rich.console import Console

from ops.bench.cache import print_cache, zipf_draw


def test_the_zipf_draw_repeats_popular_texts_and_reaches_the_tail():
    texts = [f"text {i}" for i in range(3000)]
    draw = zipf_draw(texts, 400, 1.1, seed=0)
    counts = Counter(draw)
    assert len(draw) == 400 and draw == zipf_draw(texts, 400, 1.1, seed=0)  # reproducible
    assert counts.most_common(1)[0][0] == "text 0" and counts["text 0"] >= 30  # the head repeats
    assert sum(1 for n in counts.values() if n == 1) > 100  # and most of the tail comes once
    assert draw != zipf_draw(texts, 400, 1.1, seed=1)


def test_the_table_shows_both_sides_and_the_hit_ratio():
    console = Console(record=True, width=150)
    data = {
        "requests_per_round": 400,
        "zipf_s": 1.1,
        "vocabulary": 3000,
        "off_req_per_s": 100.0,
        "on_req_per_s": 180.0,
        "off_runs_req_per_s": [100.0, 98.0],
        "on_runs_req_per_s": [170.0, 190.0],
        "hit_ratio_runs": [0.41, 0.5],
        "speedup": 1.8,
        "speedup_runs": [1.7, 1.9],
    }
    print_cache(console, data)
    text = console.export_text()
    assert "180.0" in text and "100.0" in text and "0.41, 0.50" in text and "1.80×" in text
