"""``python -m workers.intake``: run one intake replica."""

from workers.intake.service import main

main()
