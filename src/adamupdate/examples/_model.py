"""The digits example's network and its loss: MATLAB's layer array, ``modelLoss`` and accuracy.

Used by :mod:`adamupdate.examples.train_digits`, which exports these names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DigitsNet", "accuracy", "model_loss"]


class DigitsNet(nn.Module):
    """The MATLAB example's layer array, with MATLAB's default layer names and initialisation.

    Parameters
    ----------
    mean_image : torch.Tensor
        ``(1, H, W)`` mean of the training images, subtracted from every input (MATLAB's
        ``imageInputLayer`` ``'Mean'``, ``Normalization="zerocenter"``).
    num_classes : int, default 10
    """

    mean: torch.Tensor  # a buffer (register_buffer)

    def __init__(self, mean_image: torch.Tensor, num_classes: int = 10) -> None:
        super().__init__()
        channels, height, width = mean_image.shape
        self.register_buffer("mean", mean_image.clone())
        self.conv_1 = nn.Conv2d(channels, 20, kernel_size=5)
        self.conv_2 = nn.Conv2d(20, 20, kernel_size=3, padding=1)
        self.conv_3 = nn.Conv2d(20, 20, kernel_size=3, padding=1)
        self.fc = nn.Linear(20 * (height - 4) * (width - 4), num_classes)
        for layer in (self.conv_1, self.conv_2, self.conv_3, self.fc):
            # MATLAB's defaults: WeightsInitializer "glorot", BiasInitializer "zeros".
            nn.init.xavier_uniform_(layer.weight)
            assert layer.bias is not None  # every layer is made with one
            nn.init.zeros_(layer.bias)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Scores before the softmax layer."""
        x = x - self.mean
        x = F.relu(self.conv_1(x))
        x = F.relu(self.conv_2(x))
        x = F.relu(self.conv_3(x))
        return self.fc(x.flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax scores, as MATLAB's ``predict(net, X)``."""
        return torch.softmax(self.logits(x), dim=1)


def model_loss(
    net: DigitsNet, X: torch.Tensor, T: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MATLAB's ``modelLoss``: cross-entropy and its gradients w.r.t. the learnables.

    Returns the detached loss and ``{parameter name: gradient}`` in ``named_parameters`` order,
    the form :func:`adamupdate.adamupdate` takes for a network.
    """
    names, params = zip(*((n, p) for n, p in net.named_parameters() if p.requires_grad))
    loss = F.cross_entropy(net.logits(X), T)
    # autograd.grad, not backward(): like dlgradient it returns gradients instead of
    # accumulating into .grad, so nothing has to be zeroed between iterations.
    grads = torch.autograd.grad(loss, params)
    return loss.detach(), dict(zip(names, grads, strict=True))


@torch.no_grad()
def accuracy(net: DigitsNet, X: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Percentage of ``X`` whose highest score is the label ``y``: MATLAB's
    ``mean(YTest == TTest)`` in percent, as the monitor, the log and the plot show it."""
    correct = 0
    for start in range(0, len(X), batch_size):
        scores = net.logits(X[start : start + batch_size])
        correct += int((scores.argmax(dim=1) == y[start : start + batch_size]).sum())
    return 100 * correct / len(X)
