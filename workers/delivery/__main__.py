"""``python -m workers.delivery``: run one delivery process."""

from workers.delivery.service import main

main()
