"""Building blocks shared by the architectures, and the paper's weight initialisation."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

LRELU_SLOPE = 0.2
BN_EPS, BN_MOMENTUM = 1e-5, 0.1  # PyTorch convention; equals TF's decay 0.9


def bn2d(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


def bn1d(c: int) -> nn.BatchNorm1d:
    return nn.BatchNorm1d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


def check_conv_stages(cfg) -> None:
    """Each conv stack halves the image once per block (the trunks and decoder one more for their last block):
    the stages must fit image_size exactly. Raises ValueError naming the key (a recipe error)."""
    for key in ("shared_channels", "exclusive_channels", "decoder_channels"):
        blocks = len(getattr(cfg, key)) + (key != "exclusive_channels" or bool(cfg.exclusive_maps))
        if cfg.image_size >> blocks < 1 or cfg.image_size % (1 << blocks):
            raise ValueError(f"{key}: {blocks} stride-2 stages do not fit image_size {cfg.image_size}")


def conv_trunk(in_ch: int, channels: list[int]) -> nn.Sequential:
    """Stride-2 k4 convs; the first bare, later ones pre-activation (BN, LReLU, Conv); a closing BN-LReLU."""
    layers: list[nn.Module] = []
    prev = in_ch
    for i, ch in enumerate(channels):
        if i > 0:
            layers += [bn2d(prev), nn.LeakyReLU(LRELU_SLOPE)]
        layers.append(nn.Conv2d(prev, ch, 4, 2, 1))
        prev = ch
    layers += [bn2d(prev), nn.LeakyReLU(LRELU_SLOPE)]
    return nn.Sequential(*layers)


def deconv_stack(in_ch: int, channels: list[int], out_ch: int, dropout: float, dropout_blocks: int) -> nn.Sequential:
    """Stride-2 k4 transposed convs (BN, dropout on the first `dropout_blocks`, ReLU), then one to `out_ch`, tanh."""
    layers: list[nn.Module] = []
    prev = in_ch
    for i, ch in enumerate(channels):
        layers += [nn.ConvTranspose2d(prev, ch, 4, 2, 1), bn2d(ch)]
        if i < dropout_blocks and dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.ReLU())
        prev = ch
    layers += [nn.ConvTranspose2d(prev, out_ch, 4, 2, 1), nn.Tanh()]
    return nn.Sequential(*layers)


class FiLM(nn.Module):
    """Feature-wise scale and shift of a feature map from a vector: h * (1 + gamma(z)) + beta(z).

    Zero-initialised (see init_weights), so a decoder starts as the paper's concatenation-only one. It lets the
    exclusive code act multiplicatively (a colour times a digit mask): the MNIST-CDCB CPU recipe's narrow decoder,
    seeing z^d only concatenated at its input, never learns to colour a digit, even when handed the true colour."""

    def __init__(self, z: int, ch: int):
        super().__init__()
        self.linear = nn.Linear(z, 2 * ch)

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if z.dim() == 2:  # a vector code: one scale and shift per channel
            gamma, beta = self.linear(z)[:, :, None, None].chunk(2, dim=1)
        else:  # a map code: per position, bilinearly upsampled to h (nearest would print its blocks on the image)
            film = self.linear(z.movedim(1, -1)).movedim(-1, 1)
            gamma, beta = F.interpolate(film, size=h.shape[2:], mode="bilinear", align_corners=False).chunk(2, dim=1)
        return h * (1 + gamma) + beta


def film_layers(cfg) -> nn.ModuleList | None:
    """One FiLM per transposed-conv block when `decoder_conditioning: film`, else None (the paper's decoder)."""
    if cfg.decoder_conditioning != "film":
        return None
    return nn.ModuleList(FiLM(cfg.z_exclusive, ch) for ch in cfg.decoder_channels)


def run_deconvs(net: nn.Sequential, films: nn.ModuleList | None, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """`net(h)`, with each block's normalised features modulated by its FiLM (after BN, before dropout/ReLU)."""
    if films is None:
        return net(h)
    film = iter(films)
    for layer in net:
        h = layer(h)
        if isinstance(layer, nn.BatchNorm2d):
            h = next(film)(h, z)
    return h


def mlp(sizes: list[int], *, final_act: bool, act: type[nn.Module] = nn.LeakyReLU) -> nn.Sequential:
    """Linear layers with BN + activation between them (and after the last one when `final_act`)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_act:
            layers += [bn1d(b), act(LRELU_SLOPE) if act is nn.LeakyReLU else act()]
    return nn.Sequential(*layers)


class GaussianConv(nn.Module):
    """A k4 s2 conv head emitting [mu | logvar] along channels."""

    def __init__(self, in_ch: int, z_ch: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, 2 * z_ch, 4, 2, 1)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv(h).chunk(2, dim=1)


class GaussianMLP(nn.Module):
    """An MLP head emitting [mu | logvar] along features (input flattened first)."""

    def __init__(self, sizes: list[int]):
        super().__init__()
        self.net = mlp(sizes[:-1] + [2 * sizes[-1]], final_act=False)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(h.flatten(1)).chunk(2, dim=1)


class ConvExclusiveEncoder(nn.Module):
    """q(z^d | d) for images: a conv trunk, then flatten and one Linear to [mu | logvar] (a vector code), or a
    stride-2 conv head (`spatial`: a z-channel map)."""

    def __init__(self, in_ch: int, channels: list[int], image_size: int, z: int, spatial: bool = False):
        super().__init__()
        self.trunk = conv_trunk(in_ch, channels)
        side = image_size >> len(channels)
        self.head = GaussianConv(channels[-1], z) if spatial else GaussianMLP([side * side * channels[-1], z])

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(self.trunk(v))


def init_weights(module: nn.Module) -> None:
    """The official initialisation: conv N(0, .02); BN gamma N(1, .02); Linear Xavier-uniform; biases 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, FiLM):  # after its Linear (apply visits children first): start as the identity
        nn.init.zeros_(module.linear.weight)
        nn.init.zeros_(module.linear.bias)


class JointHead(nn.Module):
    """q(z^s | x, y): a Gaussian head on the concatenated shared features of both domains."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, h_x: torch.Tensor, h_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(torch.cat([h_x, h_y], dim=1))


class IIAEParts(nn.Module):
    """The networks of Fig. 2, per domain d in {x, y}: exclusive encoder q(z^d|d), shared trunk h_d,
    r^d(z^s|d) head on h_d, decoder p_d(z^s, z^d); plus the joint head q(z^s|x,y) on (h_x, h_y)."""

    def __init__(self, exclusive: dict, shared: dict, r_head: dict, joint: nn.Module, decoder: dict):
        super().__init__()
        self.exclusive = nn.ModuleDict(exclusive)
        self.shared = nn.ModuleDict(shared)
        self.r_head = nn.ModuleDict(r_head)
        self.joint = joint
        self.decoder = nn.ModuleDict(decoder)
