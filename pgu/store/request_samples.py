"""The samples a store request reads: the forget samples (checked against the ledger's digests) and the val samples."""

from __future__ import annotations

import torch

from pgu.data import DatasetNotFoundError, load_dataset
from pgu.store.sample_files import read_samples, sample_digests
from pgu.store.settings import RequestRefused

__all__ = ["forget_samples", "val_samples", "dataset_split", "correct_bits", "accuracy_from_bits"]


def forget_samples(samples, request_ids, known, shape, num_classes, norm, data_dir, dataset):
    """The requested samples from ``samples`` (a dataset or a sample file; None: the store's dataset), each
    checked against the digest the ledger recorded at ``init`` (``known``)."""
    if samples is None:
        samples = dataset_split("train", data_dir, dataset, "the forget samples")
    elif not hasattr(samples, "ids"):
        samples = read_samples(samples, input_shape=shape, num_classes=num_classes, normalisation=norm,
                               what="forget sample file")
    if tuple(samples.x.shape[1:]) != shape:
        raise RequestRefused(f"the forget samples have inputs {tuple(samples.x.shape[1:])}; "
                             f"the model takes {shape}")
    lookup = {int(v): i for i, v in enumerate(samples.ids.tolist())}
    missing = [int(i) for i in request_ids.tolist() if int(i) not in lookup]
    if missing:
        raise RequestRefused(f"the forget samples lack {len(missing)} requested id(s): {missing[:10]}; every "
                             f"sample to forget must be given")
    data = samples.subset(torch.tensor([lookup[int(i)] for i in request_ids.tolist()], dtype=torch.long))
    digests = sample_digests(data.x, data.y)
    wrong = [int(i) for i, d in zip(data.ids.tolist(), digests) if known[int(i)][1] != d]
    if wrong:
        raise RequestRefused(f"{len(wrong)} forget sample(s) do not match what the model was trained on (image or "
                             f"label differs): ids {wrong[:10]}; give the samples exactly as trained on")
    return data

def val_samples(val, shape, num_classes, norm, data_dir, dataset):
    """The held-out samples: ``val`` (a dataset or a sample file) or the store's dataset's val split."""
    if val is None:
        return dataset_split("val", data_dir, dataset, "the val samples")
    if not hasattr(val, "ids"):
        val = read_samples(val, input_shape=shape, num_classes=num_classes, normalisation=norm, require_ids=False,
                           what="val sample file")
    if tuple(val.x.shape[1:]) != shape:
        raise RequestRefused(f"the val samples have inputs {tuple(val.x.shape[1:])}; the model takes {shape}")
    return val

def dataset_split(split: str, data_dir, dataset: dict, what: str):
    """A split of the dataset the store was made from, or a refusal that says how to give the samples instead."""
    try:
        splits = load_dataset(dataset["name"], data_dir=data_dir, split_seed=int(dataset["split_seed"]))
    except (DatasetNotFoundError, FileNotFoundError, ValueError) as exc:
        raise RequestRefused(f"{what} were not given and the dataset {dataset['name']!r} cannot be read ({exc}); "
                             f"give them as a sample file (--data / --val; `pgu samples` writes one)") from exc
    return getattr(splits, split)


def correct_bits(model, data, device="cpu") -> str:
    """Which of ``data``'s samples ``model`` classifies correctly, in order, as hex of packed bits (the ledger keeps
    the trained model's, per val set, so no request scores it again)."""
    import numpy as np

    from pgu.evaluation import predict

    logits, targets = predict(model, data.loader(512, device=device), "the val samples")
    correct = (logits.argmax(1) == targets).numpy().astype(np.uint8)
    return np.packbits(correct).tobytes().hex()


def accuracy_from_bits(bits: str, index: torch.Tensor, labels: torch.Tensor, exclude=()) -> float | None:
    """Accuracy in percent over the samples ``index`` picks whose label (``labels``, of the whole set) is not excluded,
    from :func:`correct_bits` of the whole set; None when none are left."""
    import numpy as np

    correct = torch.from_numpy(np.unpackbits(np.frombuffer(bytes.fromhex(bits), dtype=np.uint8))[:len(labels)].copy())
    index = index[~torch.isin(labels[index], torch.tensor(list(exclude), dtype=labels.dtype))] if exclude else index
    return None if index.numel() == 0 else 100.0 * float(correct[index].double().mean())
