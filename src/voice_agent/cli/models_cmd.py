"""`voice-agent models`: what each model is, where it lives, and whether it checks out."""

from __future__ import annotations

from ..core.config import V3Config
from ..core.errors import ModelNotReadyError
from ..services.models import model_infos, prepare_models


def _size(n: int | None) -> str:
    return "-" if not n else f"{n / 1e6:,.0f} MB"


def run_models(config: V3Config, *, check_only: bool, all_models: bool = False) -> int:
    """Prepare the configured models (or every one), then show every model's state."""
    if not check_only:
        try:
            prepare_models(config, progress=True, all_models=all_models)
        except ModelNotReadyError as exc:
            print(f"error: {exc}")
    infos = model_infos(config, verify=True)
    rows = [("*" if i.selected else " ", i.role, i.name, i.package, _size(i.size_bytes), i.status,
             str(i.path or "-")) for i in infos]
    head = (" ", "ROLE", "MODEL", "PACKAGE", "SIZE", "STATUS", "PATH")
    widths = [max(len(str(r[c])) for r in [head, *rows]) for c in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip())
    print("\n* = used by the current configuration")
    missing = [i for i in infos if i.selected and not i.verified]
    if missing:
        names = ", ".join(f"{i.role} {i.name}" for i in missing)
        print(f"not ready: {names}. Install the packages (make install), then run `voice-agent models`.")
        return 1
    return 0
