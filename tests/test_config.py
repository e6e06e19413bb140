"""Config loading and schema validation (vdc/config.py, workflow/schemas/config.schema.yaml)."""
import copy
from pathlib import Path

import pytest
import yaml

from vdc.config import ConfigError, deep_merge, load_config, method_settings, parse_temporal, stage_settings, validate_config

ROOT = Path(__file__).resolve().parents[1]


def _default():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_default_config_is_valid_and_gets_defaults():
    cfg = load_config(ROOT / "config.yaml")
    assert cfg["evaluate"]["weight_decay"] == 0.01   # paper default filled in
    assert cfg["evaluate"]["betas"] == [0.9, 0.999]
    assert cfg["teacher"]["momentum"] == 0.9
    assert cfg["datasets"]["toy"]["clip_len"] == 8
    assert cfg["methods"]["rded"]["mipc"] == 16      # the toy value overrides the paper's 70


def test_shipped_configs_are_valid():
    """Every shipped config loads alone, as `snakemake --configfile <it>` runs it (an `extends:` chain resolved)."""
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(path)


def test_wrong_key_names_the_key_and_the_allowed_ones():
    cfg = _default()
    cfg["evaluate"]["epoch"] = 3
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, "my.yaml")
    msg = str(err.value)
    assert "my.yaml" in msg and "evaluate" in msg and "'epoch'" in msg and "epochs" in msg


def test_wrong_value_is_reported():
    cfg = _default()
    cfg["evaluate"]["loss"] = "mse"
    with pytest.raises(ConfigError, match="evaluate.loss"):
        validate_config(cfg)


def test_study_must_name_defined_datasets_and_methods():
    cfg = _default()
    cfg["study"]["datasets"] = ["ucf101"]
    with pytest.raises(ConfigError, match="ucf101"):
        validate_config(cfg)
    cfg = _default()
    cfg["study"]["methods"] = ["nosuch"]
    with pytest.raises(ConfigError, match="nosuch"):
        validate_config(cfg)


def test_method_variants_and_overrides_merge_in_order():
    cfg = _default()
    cfg["methods"]["edc_i3d"] = {"base": "edc", "networks": ["minic3d", "i3d_r18"]}
    cfg["datasets"]["toy"]["method_overrides"] = {"edc_i3d": {"lr": 0.1, "ipc": {5: {"iterations": 7}}}}
    validate_config(cfg)
    s1 = method_settings(cfg, "toy", "edc_i3d", 1)
    s5 = method_settings(cfg, "toy", "edc_i3d", 5)
    assert s1["base"] == "edc" and s1["networks"] == ["minic3d", "i3d_r18"]
    assert s1["lr"] == 0.1 and s5["lr"] == 0.1
    assert s1["iterations"] == cfg["methods"]["edc"]["iterations"] and s5["iterations"] == 7
    assert s1["needs"] == ["teacher", "stats"]       # inherited from the base method


def test_stage_settings_are_pure_functions_of_the_config():
    cfg = load_config(ROOT / "config.yaml")
    before = copy.deepcopy(cfg)
    a = stage_settings(cfg, "evaluate", "toy", arch="minic3d", labels="soft", loss="msegt", cutmix="nocutmix", seed="1")
    b = stage_settings(cfg, "evaluate", "toy", arch="minic3d", labels="soft", loss="msegt", cutmix="nocutmix", seed="1")
    assert a == b and cfg == before
    assert a["evaluate"]["labels"] == "soft" and a["evaluate"]["cutmix"] is False and a["seed"] == 1


def test_temporal_tags():
    t = parse_temporal("tc16-sliding-none")
    assert (t.t_c, t.sampling, t.interpolation, t.tag) == (16, "sliding", "none", "tc16-sliding-none")
    with pytest.raises(ConfigError):
        parse_temporal("tc16-window-none")
