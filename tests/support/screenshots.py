"""The README's screenshots: small copies of the browser tests' ones.

``python -m tests.support.screenshots`` (after ``pytest tests/api/test_dashboard_demo.py``, or the
district test) takes ``tests/artifacts/dashboard-<view>.png``, keeps the top of the page, scales it
to 960 px wide and writes it with a 128-colour palette to ``docs/img/dashboard-<view>.png`` (tens of
kB each, kept in the repository).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
OUT = ROOT / "docs" / "img"
# view -> (artifact, the page's height kept, in the screenshot's pixels)
VIEWS = {"district": ("dashboard-demo-district.png", 640), "energy": ("dashboard-demo-energy.png", 1260),
         "fleet": ("dashboard-demo-fleet.png", 900)}


def shrink(src: Path, dst: Path, keep_h: int, width: int = 960, colours: int = 128) -> int:
    from PIL import Image

    im = Image.open(src).convert("RGB")
    im = im.crop((0, 0, im.width, min(im.height, keep_h)))
    im = im.resize((width, round(im.height * width / im.width)), Image.LANCZOS)
    im = im.quantize(colors=colours, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    dst.parent.mkdir(parents=True, exist_ok=True)
    im.save(dst, optimize=True)
    return dst.stat().st_size


def main(argv: list[str]) -> int:
    prefix = argv[1] if len(argv) > 1 else "dashboard-demo-"
    total = 0
    for view, (name, keep_h) in VIEWS.items():
        src = ARTIFACTS / name.replace("dashboard-demo-", prefix)
        if not src.exists():
            print(f"missing {src}: run the dashboard's browser tests first", file=sys.stderr)
            return 1
        n = shrink(src, OUT / f"dashboard-{view}.png", keep_h)
        total += n
        print(f"docs/img/dashboard-{view}.png  {n // 1024} kB")
    print(f"total {total // 1024} kB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
