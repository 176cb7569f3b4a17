"""scripts/average_checkpoints.py: the blend is (1 - w) · A + w · B where the files differ, equal tensors
stay bit-identical, and files that are not one model, or an output that exists, are refused."""
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from scripts_module import load_script

average = load_script("average_checkpoints")


def write(path, tensors, config="{}"):
    save_file(tensors, str(path), metadata={"format": "pt", "config": config})
    return str(path)


def test_blend_moves_only_the_tensors_that_differ(tmp_path):
    base = torch.randn(4, 3).half()
    a = write(tmp_path / "a.safetensors", {"base": base, "stack": torch.zeros(2).half(), "step": torch.tensor([3])})
    b = write(tmp_path / "b.safetensors", {"base": base, "stack": torch.tensor([2.0, -4.0]).half(),
                                            "step": torch.tensor([7])})
    average.main([str(tmp_path / "out.safetensors"), a, b, "--weight", "0.25"])
    with safe_open(str(tmp_path / "out.safetensors"), "pt") as f:
        assert torch.equal(f.get_tensor("base"), base)
        assert f.get_tensor("stack").tolist() == [0.5, -1.0] and f.get_tensor("stack").dtype == torch.float16
        assert f.get_tensor("step").tolist() == [3]  # not a weight: the first file's
        assert f.metadata()["config"] == "{}"


def test_files_that_are_not_one_model_and_an_existing_output_are_refused(tmp_path):
    a = write(tmp_path / "a.safetensors", {"w": torch.zeros(2)})
    with pytest.raises(ValueError, match="different tensors"):
        average.blend({"w": torch.zeros(2)}, {"v": torch.zeros(2)}, 0.5)
    with pytest.raises(ValueError, match=r"w: \(2,\)"):
        average.blend({"w": torch.zeros(2)}, {"w": torch.zeros(3)}, 0.5)
    other = write(tmp_path / "c.safetensors", {"w": torch.ones(2)}, config='{"layers": 2}')
    with pytest.raises(SystemExit):  # argparse's error: "the two files' configs differ ..."
        average.main([str(tmp_path / "out.safetensors"), a, other])
    with pytest.raises(SystemExit):  # "--weight must be between 0 and 1 (got 2.0)"
        average.main([str(tmp_path / "out.safetensors"), a, a, "--weight", "2"])
    assert not (tmp_path / "out.safetensors").exists()
    kept = write(tmp_path / "kept.safetensors", {"w": torch.full((2,), 9.0)})
    b = write(tmp_path / "b.safetensors", {"w": torch.ones(2)})
    with pytest.raises(FileExistsError):
        average.main([kept, a, b])
    with safe_open(kept, "pt") as f:
        assert f.get_tensor("w").tolist() == [9.0, 9.0]
