import pytest
import yaml

from tests.conftest import run_reel


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("args,fragments", [
    (["train", "experiment=does_not_exist"], ["experiment=does_not_exist"]),
    (["train", "data.not_a_key=3"], ["data.not_a_key", "unknown key"]),
    (["train", "data.height=100", "autoencoder=dc-ae-v-f32t4c32"], ["data.height=100", "divisible by 32"]),
    (["data", "make-shapes"], ["out_dir"]),
    (["data", "make-shapes", "out_dir=x", "num_clips=many"], ["num_clips"]),
    (["nonsense"], ["unknown command"]),
    (["data", "scan", "dir=/no/such/dir", "out=/tmp/x.jsonl"], ["/no/such/dir"]),
    (["eval", "world", "manifest=/no/such/manifest.jsonl"], ["/no/such/manifest.jsonl"]),
])
def test_user_errors_are_one_line_with_status_2(args, fragments):
    assert_one_line_error(run_reel(*args), *fragments)


def test_help_lists_commands_and_arguments():
    top = run_reel("--help")
    assert top.returncode == 0
    for words in ("data make-shapes", "data scan", "data check", "eval world", "train", "sample", "export"):
        assert f"reel {words}" in top.stdout
    sub = run_reel("data", "make-shapes", "--help")
    assert sub.returncode == 0 and "out_dir=(required)" in sub.stdout and "num_frames=" in sub.stdout


def test_cfg_job_prints_resolved_config_with_overrides():
    result = run_reel("train", "experiment=shapes-64", "train.lr=0.5", "--cfg", "job")
    assert result.returncode == 0, result.stderr
    cfg = yaml.safe_load(result.stdout)
    assert cfg["train"]["lr"] == 0.5 and cfg["experiment"] == "shapes-64"
    assert set(cfg) >= {"data", "autoencoder", "model", "text_encoder", "train", "sample", "distributed",
                        "logging"}


def test_command_shorthands_map_to_config_keys():
    result = run_reel("sample", "num_frames=33", "steps=7", "--cfg", "job")
    cfg = yaml.safe_load(result.stdout.split("args:")[0])
    assert cfg["sample"]["num_frames"] == 33 and cfg["sample"]["steps"] == 7


def test_export_of_a_missing_checkpoint_is_a_user_error():
    assert_one_line_error(run_reel("export", "checkpoint=runs/none", "out=exported"), "runs/none")


def test_train_without_a_trainer_kind_is_a_user_error():
    assert_one_line_error(run_reel("train", "experiment=shapes-64"), "reel train ae")
