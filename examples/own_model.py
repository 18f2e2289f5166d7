"""PGU on a model and data loaders of your own: train, cache the statistics once, serve a deletion request.

Run it with ``python examples/own_model.py`` (seconds on a CPU; it writes runs/example/). The same
code is the README's Python example. The request removes a whole class (every training image of
the digit 3), which is where PGU is at its best; for a set of samples leave ``mode`` out.
"""

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pgu

torch.manual_seed(0)
digits = load_digits()                                          # 1,797 8x8 images, bundled with scikit-learn
x, y = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16, torch.tensor(digits.target)
train, val = torch.randperm(len(y)).split([1500, 297])          # val: held out, for the stopping rule


def loader(ids, shuffle=False):
    return DataLoader(TensorDataset(x[ids], y[ids]), batch_size=128, shuffle=shuffle)


model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                      nn.ReLU(), nn.Flatten(), nn.Linear(32 * 4 * 4, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
for epoch in range(10):                                         # your own training loop
    for inputs, targets in loader(train, shuffle=True):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets, label_smoothing=0.1).backward()
        optimizer.step()

stats = pgu.GramStats().fit(model, loader(train))               # once per trained model
stats.save("runs/example/stats.safetensors")                    # safetensors, no pickle

forget = train[y[train] == 3]                                   # the deletion request: every "3"
result = pgu.unlearn(model, loader(forget), pgu.GramStats.load("runs/example/stats.safetensors"),
                     val_loader=loader(val), mode="class", lr=(0.5, 0.05))
print(result.stop_reason, result.epochs, result.cgs.summary())
before, after = result.history[0], result.history[result.kept_epoch]
print(f"forget acc {before['forget_acc']:.1f} -> {after['forget_acc']:.1f}, "
      f"val acc {before['val_acc']:.1f} -> {after['val_acc']:.1f}")
unlearned, next_stats = result.model, result.retain_stats       # the state for the next request
