import json

import pytest

from planner.base.entries import load_models_file, reference_entries, resolve_arch, single_entry
from planner.base.errors import UserError
from planner.base.plan import ItemTransform


def test_reference_set_has_six_entries_with_current_timm_names():
    entries = reference_entries()
    assert len(entries) == 6
    assert len({e.name for e in entries}) == 6
    convnext = entries[0]
    assert convnext.arch == "convnext_large.fb_in22k"
    assert convnext.reference_arch == "convnext_large_in22k"
    assert convnext.size == (320, 224) and convnext.item == ItemTransform(resize=(640, 480), method="crop")
    squish = entries[1]
    assert squish.arch == "vit_large_patch16_224" and squish.reference_arch is None
    assert squish.item == ItemTransform(resize=480, method="squish") and squish.size == (224, 224)
    assert {e.arch for e in entries if "swinv2" in e.arch} == {"swinv2_large_window12_192.ms_in22k"}


def test_unknown_architecture_suggests_near_names():
    with pytest.raises(UserError, match="did you mean convnext_large"):
        resolve_arch("convnext_larg")


def test_a_pretrained_tag_is_kept_and_an_unknown_one_lists_the_tags():
    assert resolve_arch("resnet18.a1_in1k") == ("resnet18.a1_in1k", None)
    with pytest.raises(UserError, match=r"resnet18 has no pretrained tag 'in22k' \(its tags: a1_in1k, .*"
                                        r"give 'resnet18' alone"):
        resolve_arch("resnet18.in22k")


@pytest.mark.parametrize(("pattern", "message"), [
    ("resnet1*", r"'resnet1\*' is a pattern \(\d+ timm names match: resnet10t, .*give one architecture name"),
    ("resnet18.*", r"is a pattern \(\d+ timm names match: resnet18.a1_in1k, "),
    ("nothing_like_this_*", "no timm architecture matches the pattern"),
])
def test_a_name_pattern_is_refused_with_what_it_matches(pattern, message):
    with pytest.raises(UserError, match=message):
        resolve_arch(pattern)


def test_near_names_ignore_case():
    with pytest.raises(UserError, match="did you mean resnet18"):
        resolve_arch("ResNet18")


def test_toml_models_file(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(
        '[[model]]\narch = "convnext_large_in22k"\nitem = { resize = [640, 480], method = "crop" }\n'
        "sizes = [224, [320, 224]]\n\n"
        '[[model]]\narch = "resnet18"\nitem = { resize = 480, method = "squish" }\nsizes = [128]\n'
    )
    entries = load_models_file(path)
    assert [(e.arch, e.size) for e in entries] == [
        ("convnext_large.fb_in22k", (224, 224)), ("convnext_large.fb_in22k", (320, 224)), ("resnet18", (128, 128))
    ]
    assert entries[2].item == ItemTransform(resize=480, method="squish")


def test_json_models_file(tmp_path):
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"model": [{"arch": "resnet18", "sizes": [[64, 48]]}]}))
    (entry,) = load_models_file(path)
    assert entry.size == (64, 48) and entry.item.method == "crop"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[model]]\narch = 'resnet18'\nsizes = [0]\n", "positive"),
        ("[[model]]\narch = 'resnet18'\n", "needs `sizes`"),
        ("[[model]]\nsizes = [224]\n", "needs an `arch`"),
        ("[[model]]\narch = 'resnet18'\nsizes = [224]\nitem = { resize = 64, method = 'zoom' }\n", "item.method"),
        ("[[model]]\narch = 'resnet18'\nsizes = [224]\ncolour = 'red'\n", "unknown field"),
        ("model = 3\n", "non-empty list"),
        ("[[model]\n", "cannot be parsed"),
        ("[[model]]\narch = 'resnet18'\nsizes = [224, 224]\n", "same entry twice"),
        ("[[model]]\narch = 'resnet_eighteen'\nsizes = [224]\n", "unknown architecture"),
    ],
)
def test_bad_models_files_are_refused_with_the_reason(tmp_path, text, message):
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        load_models_file(path)


def test_missing_models_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_models_file(tmp_path / "nope.toml")


def test_single_entry_defaults_to_resize_at_the_size():
    (entry,) = single_entry("resnet18", (64, 64))
    assert entry.item == ItemTransform(resize=(64, 64), method="crop")
    with pytest.raises(UserError):
        single_entry("resnet18", 0)


def test_a_square_resize_has_one_spelling_and_one_entry_name(tmp_path):
    (from_flags,) = single_entry("resnet18", 64)
    for resize in ("64", "[64, 64]"):
        path = tmp_path / "models.toml"
        path.write_text(f'[[model]]\narch = "resnet18"\nitem = {{ resize = {resize} }}\nsizes = [64]\n')
        assert [entry.name for entry in load_models_file(path)] == [from_flags.name] == ["resnet18-crop64-64"]
    path.write_text('[[model]]\narch = "resnet18"\nitem = { resize = 64 }\nsizes = [64]\n\n'
                    '[[model]]\narch = "resnet18"\nitem = { resize = [64, 64] }\nsizes = [64]\n')
    with pytest.raises(UserError, match="lists the same entry twice: resnet18-crop64-64"):
        load_models_file(path)  # the same transform, once
    assert ItemTransform(resize=(64, 64)) == ItemTransform(resize=64) != ItemTransform(resize=(64, 48))
