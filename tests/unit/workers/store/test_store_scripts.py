"""The result store's Lua lives in workers/store/lua/*.lua: every file is loaded, and every file ships."""

from __future__ import annotations

import configparser
from pathlib import Path

from workers.store import scripts

ROOT = Path(__file__).resolve().parents[4]
LUA = ROOT / "workers" / "store" / "lua"
NAMES = ["BYTES", "ADMIT", "ADVANCE", "CANCEL", "PROGRESS", "EXPIRE_DUE", "CLAIM_STALE", "UNSEEN"]


def test_every_lua_file_is_one_script_of_the_store():
    assert sorted(p.stem.upper() for p in LUA.glob("*.lua")) == sorted(NAMES)
    for name in NAMES:
        source = getattr(scripts, name)
        assert source == (LUA / f"{name.lower()}.lua").read_text(encoding="utf-8")
        assert "redis.call" in source, name  # Lua, not a stray file


def test_the_lua_files_are_package_data_so_an_install_ships_them():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    shipped: set[Path] = set()
    for package, globs in cfg["options.package_data"].items():
        folder = ROOT / package.replace(".", "/")
        shipped |= {p for g in globs.split() for p in folder.glob(g)}
    lua = set(LUA.glob("*.lua"))
    assert len(lua) == len(NAMES) and lua <= shipped
