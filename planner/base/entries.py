"""Which models to probe: the reference ensemble by default, a TOML/JSON models file, or one --arch.

An entry is one (architecture, item transform, final size) triple. Architecture names are checked
against timm before any probing; names timm has renamed are resolved to the current name and the
old one is kept as ``reference_arch``.
"""

from __future__ import annotations

import difflib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from planner.base.errors import UserError
from planner.base.jsonfile import read_text
from planner.base.plan import ItemTransform, Size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REFERENCE_RESIZE = (640, 480)


@dataclass(frozen=True)
class EntrySpec:
    """One model to probe and train: what the user asked for, before any measurement."""

    name: str
    arch: str
    item: ItemTransform
    size: Size
    reference_arch: str | None = None
    grad_checkpointing: bool = False


def _crop(resize: int | tuple[int, int] = REFERENCE_RESIZE) -> ItemTransform:
    return ItemTransform(resize=resize, method="crop")


def _squish(resize: int = 480) -> ItemTransform:
    return ItemTransform(resize=resize, method="squish")


# fastai "Road to the Top, part 3": four architectures, six (item transform, size) pairs.
REFERENCE_SET: tuple[tuple[str, ItemTransform, int | Size], ...] = (
    ("convnext_large_in22k", _crop(), (320, 224)),
    ("vit_large_patch16_224", _squish(), 224),
    ("vit_large_patch16_224", _crop(), 224),
    ("swinv2_large_window12_192_22k", _squish(), 192),
    ("swinv2_large_window12_192_22k", _crop(), 192),
    ("swin_large_patch4_window7_224", _crop(), 224),
)


def as_size(size: int | list[int] | tuple[int, ...], where: str = "size") -> Size:
    """A final image size as fastai's (rows, cols) pair; an int means a square.

    Raises:
        UserError: not one or two positive integers.
    """
    sides = [size] if isinstance(size, int) else list(size)
    if len(sides) == 1:
        sides = sides * 2
    if len(sides) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in sides):
        raise UserError(f"{where} {size!r} must be an integer or a pair of integers, e.g. 224 or [320, 224]")
    if min(sides) <= 0:
        raise UserError(f"{where} {size!r} must be positive, e.g. 224 or [320, 224]")
    return (sides[0], sides[1])


def entry_name(arch: str, item: ItemTransform, size: Size) -> str:
    """A readable unique name, also used as the prediction file name."""
    shown = f"{size[0]}" if size[0] == size[1] else f"{size[0]}x{size[1]}"
    return f"{arch}-{item.label}-{shown}"


def resolve_arch(arch: str) -> tuple[str, str | None]:
    """Check a timm architecture name (``arch`` or ``arch.pretrained_tag``) and follow timm's renames.

    Returns:
        (current timm name, the name given if timm renamed it, else None).

    Raises:
        UserError: timm does not know the name or its pretrained tag, or the name is a pattern; the
            message lists near names, the architecture's tags, or the names the pattern matches.
    """
    import timm

    from planner.base.compat import timm_renamed_models

    renamed = timm_renamed_models().get(arch)
    if renamed:
        return renamed, arch
    if any(char in arch for char in "*?["):
        matches = timm.list_models(arch) or timm.list_pretrained(arch)
        if not matches:
            raise UserError(f"no timm architecture matches the pattern {arch!r}; give one name per entry")
        shown = ", ".join(matches[:4]) + (", ..." if len(matches) > 4 else "")
        raise UserError(f"{arch!r} is a pattern ({len(matches)} timm names match: {shown}); "
                        "give one architecture name per entry")
    if timm.is_model(arch):
        _check_pretrained_tag(arch)
        return arch, None
    near = difflib.get_close_matches(arch.strip().lower(), timm.list_models(), n=4, cutoff=0.6)
    hint = f"; did you mean {', '.join(near)}?" if near else "; see timm.list_models()"
    raise UserError(f"unknown architecture {arch!r}{hint}")


def _check_pretrained_tag(name: str) -> None:
    """Refuse ``arch.tag`` when timm has no such pretrained tag for ``arch`` (timm would raise at build).

    Raises:
        UserError: the tag is unknown; the message lists the architecture's tags.
    """
    from timm.models import get_arch_pretrained_cfgs, split_model_name_tag

    if "." not in name:
        return
    arch, tag = split_model_name_tag(name)
    tags = [known.split(".", 1)[1] for known in get_arch_pretrained_cfgs(arch)]
    if tag not in tags:
        known = f"its tags: {', '.join(tags[:6])}{', ...' if len(tags) > 6 else ''}" if tags else "it has none"
        raise UserError(f"{arch} has no pretrained tag {tag!r} ({known}); give {arch!r} alone or one of its tags")


def timm_input_size(arch: str) -> tuple[Size, bool] | None:
    """timm's input size for ``arch`` as (rows, cols), and whether the model takes that size only
    (its pretrained config's ``fixed_input_size``: position embeddings, attention windows or biases
    made for it); None when timm has no config for the name."""
    from timm.models import get_pretrained_cfg

    config = get_pretrained_cfg(arch)
    if config is None or not config.input_size:
        return None
    _, rows, cols = config.input_size
    return (rows, cols), bool(config.fixed_input_size)


def make_entry(arch: str, item: ItemTransform, size: int | list[int] | Size) -> EntrySpec:
    """Resolve the architecture and build a named entry."""
    current, old = resolve_arch(arch)
    final = as_size(size)
    return EntrySpec(name=entry_name(arch, item, final), arch=current, item=item, size=final,
                     reference_arch=old)


def reference_entries() -> list[EntrySpec]:
    """The six entries of the reference ensemble."""
    return [make_entry(arch, item, size) for arch, item, size in REFERENCE_SET]


def single_entry(arch: str, size: int | Size, item: ItemTransform | None = None) -> list[EntrySpec]:
    """The one-entry list of ``--arch A --size S``; the item transform defaults to Resize(size)."""
    final = as_size(size)
    return [make_entry(arch, item or ItemTransform(resize=final, method="crop"), final)]


def load_models_file(path: str | Path) -> list[EntrySpec]:
    """Read a TOML or JSON models file: a list ``model`` of {arch, item, sizes}.

    Raises:
        UserError: missing, a folder, empty, not UTF-8, unreadable syntax, or a bad field (named).
    """
    path = Path(path)
    text = read_text(path, "models file", "give a TOML or JSON file with [[model]] tables (docs/probe.md)")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        raise UserError(f"models file {path} cannot be parsed: {error}") from None
    models = data.get("model") if isinstance(data, dict) else None
    if not isinstance(models, list) or not models:
        raise UserError(f"models file {path} needs a non-empty list `model` ([[model]] tables in TOML)")
    entries: list[EntrySpec] = []
    for index, model in enumerate(models):
        where = f"models file {path}: model[{index}]"
        if not isinstance(model, dict) or "arch" not in model:
            raise UserError(f"{where} needs an `arch`")
        unknown = set(model) - {"arch", "item", "sizes", "size"}
        if unknown:
            raise UserError(f"{where} has unknown field(s) {sorted(unknown)}; allowed: arch, item, sizes")
        try:
            item = ItemTransform.model_validate(model.get("item", {"resize": list(REFERENCE_RESIZE)}))
        except ValidationError as error:
            first = error.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise UserError(f"{where}.item{'.' + loc if loc else ''}: {first['msg']}") from None
        sizes = model.get("sizes", [model["size"]] if "size" in model else None)
        if not isinstance(sizes, list) or not sizes:
            raise UserError(f"{where} needs `sizes`, a list such as [224, [320, 224]]")
        for size in sizes:
            final = as_size(size, where=f"{where}.sizes")
            entries.append(make_entry(str(model["arch"]), item, final))
    names = [entry.name for entry in entries]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise UserError(f"models file {path} lists the same entry twice: {', '.join(duplicates)}")
    return entries
