"""The pretend GPU (clipnotes.pretend_gpu) fails where CUDA would, and only there (issue 17, item 2)."""
import numpy as np
import pytest
import torch

from clipnotes import features, models
from clipnotes.data import ArrayDataset
from clipnotes.pretend_gpu import DeviceMixError, GpuTensor, pretend_gpu
from clipnotes.profiles import get_profile


def test_a_cpu_tensor_meeting_a_gpu_tensor_fails():
    with pretend_gpu() as gpu:
        text = torch.randn(5, 8, device=gpu)
        image_features = torch.randn(3, 8)                     # e.g. cached features, still on the CPU
        with pytest.raises(DeviceMixError, match="met a GPU tensor"):
            image_features @ text.T
        assert (image_features.to(gpu) @ text.T).device == gpu


def test_what_cuda_allows_is_allowed():
    with pretend_gpu() as gpu:
        x = torch.arange(6.0).to(gpu)
        assert (x * torch.tensor(2.0)).device == gpu                         # a 0-dim CPU tensor
        assert x[torch.tensor([0, 2])].cpu().tolist() == [0.0, 2.0]          # CPU indices
        host = torch.zeros(6)
        host.copy_(x)                                                         # a copy across devices
        assert host.tolist() == x.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
        assert x.sum().item() == 15.0 and f"{x.sum():.1f}" == "15.0" and isinstance(x.cpu().numpy(), np.ndarray)
        with pytest.raises(TypeError, match="cpu"):
            x.numpy()


def test_a_model_trains_on_the_pretend_gpu_with_the_same_numbers():
    def step(device):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 3)).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=0.1)
        x, y = torch.randn(16, 4).to(device), torch.randint(0, 3, (16,)).to(device)
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        return net, net[0].weight.detach().cpu()

    _, on_cpu = step("cpu")
    with pretend_gpu() as gpu:
        net, on_gpu = step(gpu)
        assert isinstance(net[0].weight, GpuTensor) and net[0].weight.device == gpu
    torch.testing.assert_close(on_gpu, on_cpu)


def test_a_checkpoint_saved_on_the_pretend_gpu_loads_on_the_cpu(tmp_path):
    """As ``torch.save`` of CUDA weights loads with ``map_location="cpu"``."""
    from clipnotes.utils import load_torch, save_torch
    with pretend_gpu() as gpu:
        net = torch.nn.Linear(3, 2).to(gpu)
        save_torch(net.state_dict(), tmp_path / "w.pt")
        expected = net.weight.detach().cpu()
    back = load_torch(tmp_path / "w.pt")
    assert back["weight"].device.type == "cpu" and type(back["weight"]) is torch.Tensor
    torch.testing.assert_close(back["weight"], expected)


def test_a_forgotten_move_in_the_package_is_caught(monkeypatch):
    """Drop the one ``.to(device)`` in front of the image encoder: encoding a dataset fails."""
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    data = ArrayDataset(images, [0, 1, 0, 1], ["a", "b"], "pretend-gpu-test")
    with pretend_gpu() as gpu:
        bundle = models.create_mini("shipped", gpu)
        good = features.encode_dataset(bundle, data, batch_size=2)
        assert good.features.device.type == "cpu" and good.features.shape[0] == 4      # results come back
        features._MEMORY.clear()
        monkeypatch.setattr(models.ClipBundle, "encode_images",
                            lambda self, x, normalize=True: self.model.encode_image(self.preprocess(x), normalize))
        with pytest.raises(DeviceMixError):
            features.encode_dataset(bundle, data, batch_size=2)
    features._MEMORY.clear()


def test_the_paper_check_runs_on_the_pretend_gpu_when_asked(monkeypatch):
    monkeypatch.setenv("CLIPNOTES_PAPER_CHECK", "1")
    assert get_profile("paper").device == "cpu"
    monkeypatch.setenv("CLIPNOTES_PRETEND_GPU", "1")
    assert get_profile("paper").device == "meta"
