"""`voice-agent models`: what each model is, where it lives, and whether it checks out."""

from __future__ import annotations

from ..core.config import V3Config
from ..services.models import model_infos, prepare_models


def _size(n: int | None) -> str:
    return "-" if not n else f"{n / 1e6:,.0f} MB"


def run_models(config: V3Config, *, check_only: bool) -> int:
    infos = model_infos(config) if check_only else prepare_models(config, progress=True)
    rows = [(i.role, i.name, i.package, _size(i.size_bytes), i.status, str(i.path)) for i in infos]
    head = ("ROLE", "MODEL", "PACKAGE", "SIZE", "STATUS", "PATH")
    widths = [max(len(str(r[c])) for r in [head, *rows]) for c in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    bad = [i for i in infos if not i.verified]
    if bad:
        print(f"\n{len(bad)} model(s) not ready: install the packages above "
              "(make install) and run `voice-agent models`.")
        return 1
    return 0
