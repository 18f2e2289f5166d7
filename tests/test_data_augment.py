"""Batch augmentation on tensors (random crop with zero padding, horizontal flip) and loader transforms."""

import pytest
import torch
import torch.nn.functional as F

from pgu.data import ArrayDataset, RandomCropFlip, TensorLoader


def _distinct_batch(n=6, c=3, h=8, w=10):
    # every pixel value distinct and non-zero, so a window of the padded image identifies its offset
    return (torch.arange(n * c * h * w, dtype=torch.float32) + 1).view(n, c, h, w)


def test_shapes_dtype_and_determinism_under_a_seed():
    x = torch.randn(32, 3, 16, 16)
    before = x.clone()
    aug = RandomCropFlip(padding=4)
    a = aug(x, torch.Generator().manual_seed(5))
    b = aug(x, torch.Generator().manual_seed(5))
    c = aug(x, torch.Generator().manual_seed(6))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(x, before)  # the input is left alone
    assert aug(x[:0], torch.Generator()).shape == (0, 3, 16, 16)


def test_crop_is_a_shifted_window_of_the_zero_padded_input():
    x, p = _distinct_batch(), 3
    aug = RandomCropFlip(padding=p, flip=False)
    out = aug(x, torch.Generator().manual_seed(0))
    padded = F.pad(x, (p, p, p, p))
    h, w = x.shape[2:]
    offsets = []
    for n in range(len(x)):  # brute force: which window of the padded image is it?
        hits = [(dy, dx) for dy in range(2 * p + 1) for dx in range(2 * p + 1)
                if torch.equal(out[n], padded[n, :, dy:dy + h, dx:dx + w])]
        assert len(hits) == 1
        offsets.append(hits[0])
    assert len(set(offsets)) > 1  # offsets are drawn per image
    # and they are exactly the draws of the same generator
    dy, dx, flips = aug.draw(len(x), torch.Generator().manual_seed(0))
    assert offsets == list(zip(dy.tolist(), dx.tolist())) and not flips.any()
    # a shifted window brings zeros in from the padding
    assert any((out[n] == 0).any() for n in range(len(x)) if offsets[n] != (p, p))


def test_flip_really_flips():
    x = _distinct_batch()
    assert torch.equal(RandomCropFlip(padding=0, flip_p=1.0)(x, torch.Generator()), x.flip(-1))
    assert torch.equal(RandomCropFlip(padding=0, flip_p=0.0)(x, torch.Generator()), x)
    out = RandomCropFlip(padding=0)(x, torch.Generator().manual_seed(1))
    flipped = [bool(torch.equal(out[n], x[n].flip(-1))) for n in range(len(x))]
    same = [bool(torch.equal(out[n], x[n])) for n in range(len(x))]
    assert all(f != s for f, s in zip(flipped, same)) and any(flipped) and any(same)


def test_crop_and_flip_together_match_the_draws():
    x, p = _distinct_batch(n=16), 2
    aug = RandomCropFlip(padding=p)
    out = aug(x, torch.Generator().manual_seed(3))
    dy, dx, flips = aug.draw(len(x), torch.Generator().manual_seed(3))
    padded = F.pad(x, (p, p, p, p))
    h, w = x.shape[2:]
    for n in range(len(x)):
        window = padded[n, :, dy[n]:dy[n] + h, dx[n]:dx[n] + w]
        assert torch.equal(out[n], window.flip(-1) if flips[n] else window)
    assert flips.any() and not flips.all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="padding"):
        RandomCropFlip(padding=-1)
    with pytest.raises(ValueError, match="N, C, H, W"):
        RandomCropFlip()(torch.zeros(3, 8, 8), torch.Generator())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_works_on_gpu_tensors():
    x = _distinct_batch()
    aug = RandomCropFlip(padding=2)
    cpu = aug(x, torch.Generator().manual_seed(0))
    gpu = aug(x.cuda(), torch.Generator().manual_seed(0))
    assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)


def test_loader_transform_is_reproducible_per_pass_and_keeps_labels_aligned():
    n = 20
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 4, 4).contiguous()
    y = torch.arange(n)
    seen = []

    def tag(xb, g):  # records the generator's first draw; keeps the sample's value in channel 0
        seen.append(torch.rand(1, generator=g).item())
        return torch.cat([xb, torch.rand(len(xb), 1, 4, 4, generator=g)], 1)

    loader = TensorLoader(x, y, batch_size=8, shuffle=True, seed=3, transform=tag)
    first = list(loader)
    second = list(loader)
    for xb, yb in first + second:
        assert xb.shape[1] == 2 and torch.equal(xb[:, 0, 0, 0].long(), yb)
    again = list(TensorLoader(x, y, batch_size=8, shuffle=True, seed=3, transform=tag))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert not torch.equal(first[0][0], second[0][0])
    # the transform's stream does not change the shuffle order
    plain = [yb for _, yb in TensorLoader(x, y, batch_size=8, shuffle=True, seed=3)]
    assert all(torch.equal(a[1], b) for a, b in zip(first, plain))


def test_array_dataset_loader_passes_the_transform_through():
    ds = ArrayDataset(torch.randn(10, 3, 8, 8), torch.arange(10) % 2, torch.arange(10))
    aug = RandomCropFlip(padding=2)
    a = torch.cat([xb for xb, _ in ds.loader(4, seed=1, transform=aug)])
    b = torch.cat([xb for xb, _ in ds.loader(4, seed=1, transform=aug)])
    assert torch.equal(a, b) and not torch.equal(a, ds.x)
    assert torch.equal(torch.cat([xb for xb, _ in ds.loader(4)]), ds.x)  # no transform: unchanged
    with pytest.raises(TypeError, match="callable"):
        TensorLoader(ds.x, ds.y, transform=3)
