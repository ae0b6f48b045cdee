"""Cars3D measured against ground truth (the paper shows pictures only): X = a car seen from azimuth 0, Y = the
same car and elevation from azimuth 1..23, so the shared code should hold the car (and elevation) and z^y the
azimuth.

- identity retrieval across views: each test Y view → the nearest r^x mean among the test X views (one per car
  and elevation); correct when it is the same car. Overall and per azimuth; chance 1 / cars.
- guided translation: decode(shared code of x = car c at elevation e, z^y of car c' ≠ c at (e, a)) against the
  true render of c at (e, a): mean L1 (0-255) and PSNR (dB), beside two baselines (copying the frontal x; the
  training car whose frontal view at e is nearest to x in pixels, seen at (e, a)) and the joint reconstruction
  (decode(q(z^s | x, y), z^y of y): the upper bound).
- factor probes: a linear (softmax) probe on z^y and on z^s (the r^y mean) for the azimuth (fit on the training
  cars, scored on the test cars; chance 1/23) and for the car (fit on the test cars' odd azimuths, scored on the
  even ones; chance 1 / cars).

Samples are located by key: a `iiae prepare cars` split holds, per car in its provenance order, 4 elevations × 23
azimuths in key order.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from iiae.errors import UserError
from iiae.models.iiae import eval_mode
from iiae.progress import progress_bar
from iiae.evaluation.retrieval_metrics import nearest
from iiae.data.image_io import to_uint8
from iiae.grids import tile_grid
from iiae.evaluation.guided_error import l1_psnr

AZIMUTHS, ELEVATIONS = 23, 4  # Y azimuths 1..23 per elevation
PER_CAR = AZIMUTHS * ELEVATIONS
PROBE_STEPS = 200


def is_views_dataset(info) -> bool:
    return info.source == "cars"


def _views(info, split: str) -> tuple[list[int], torch.Tensor]:
    """The split's cars and, per sample index, (car position, elevation, azimuth)."""
    cars = info.provenance.get("cars", {}).get(split)
    if not cars or info.split(split).count != PER_CAR * len(cars):
        raise UserError(f"{info.root}: split {split!r} is not a `iiae prepare cars` split ({PER_CAR} views per car)")
    i = torch.arange(info.split(split).count)
    return cars, torch.stack([i // PER_CAR, (i % PER_CAR) // AZIMUTHS, i % AZIMUTHS + 1], dim=1)


def _load(info, split: str, size: int, batch_size: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """All x and y of a split as uint8 [N,3,S,S] (in key order, checked), to keep a training split in memory."""
    from iiae.data import iter_eval_batches

    xs, ys, keys = [], [], []
    total = info.split(split).count
    with progress_bar(total=total, unit="pair", desc=f"reading {split}", disable=not progress, leave=False) as bar:
        for b in iter_eval_batches(info, split, batch_size, image_size=size):
            xs.append(to_uint8(b["x"]))
            ys.append(to_uint8(b["y"]))
            keys += [int(k) for k in b["key"]]
            bar.update(len(b["key"]))
    if keys != list(range(total)):
        raise UserError(f"{info.root}: split {split!r} keys are not 0..{total - 1} in order; re-create it with "
                        f"`{info.fix_command()}`")
    return torch.cat(xs), torch.cat(ys)


def _to_float(v: torch.Tensor, device) -> torch.Tensor:
    return v.to(device).float() / 127.5 - 1


def _index(car: torch.Tensor, elevation: torch.Tensor, azimuth: torch.Tensor) -> torch.Tensor:
    """The sample index of (car position, elevation, azimuth 1..23) in a cars split."""
    return car * PER_CAR + elevation * AZIMUTHS + azimuth - 1


@torch.no_grad()
def _apply(fn, *inputs: torch.Tensor, device, batch_size: int, images: bool = False) -> torch.Tensor:
    """fn over aligned uint8 inputs in batches; results on the CPU: flattened float32 codes, or uint8 images."""
    outs = []
    for start in range(0, len(inputs[0]), batch_size):
        out = fn(*(_to_float(v[start:start + batch_size], device) for v in inputs))
        outs.append(to_uint8(out) if images else out.flatten(1).float().cpu())
    return torch.cat(outs)


def linear_probe(train: torch.Tensor, train_labels: torch.Tensor, test: torch.Tensor, test_labels: torch.Tensor,
                 *, steps: int = PROBE_STEPS, weight_decay: float = 1e-3) -> float:
    """Test accuracy of a softmax regression on standardised features (L-BFGS, deterministic)."""
    mean, std = train.mean(0), train.std(0).clamp_min(1e-6)
    a, b = (train - mean) / std, (test - mean) / std
    classes = torch.unique(torch.cat([train_labels, test_labels]))
    index = {int(c): i for i, c in enumerate(classes)}
    ya = torch.tensor([index[int(c)] for c in train_labels])
    yb = torch.tensor([index[int(c)] for c in test_labels])
    with torch.enable_grad():
        w = torch.zeros(a.shape[1], len(classes), requires_grad=True)
        bias = torch.zeros(len(classes), requires_grad=True)
        opt = torch.optim.LBFGS([w, bias], max_iter=steps, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(a @ w + bias, ya) + weight_decay * w.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
    return ((b @ w + bias).argmax(1) == yb).float().mean().item()


@torch.no_grad()
def view_metrics(model, info, split: str = "test", *, train_split: str = "train", batch_size: int = 256,
                 device=None, progress: bool = True) -> dict:
    """The metrics of the module docstring; keys prefixed `views_`."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    size = model.cfg.image_size
    cars, where = _views(info, split)
    _, train_where = _views(info, train_split)
    x, y = _load(info, split, size, batch_size, progress)
    tx, ty = _load(info, train_split, size, batch_size, progress)  # uint8: 16,192 pairs at 64 px are 400 MB
    run = lambda fn, *v, **kw: _apply(fn, *v, device=device, batch_size=batch_size, **kw)
    car, elevation, azimuth = where.unbind(1)
    out: dict = {}
    with eval_mode(model):
        # identity retrieval: every Y view against the X views (azimuth-1 rows hold each (car, elevation) once)
        front = azimuth == 1
        gallery = run(lambda v: model.encode_shared(v, "x"), x[front])
        queries = run(lambda v: model.encode_shared(v, "y"), y)
        hit = (car[front][nearest(queries, gallery)] == car).float()
        out["views_identity_recall_at_1"] = hit.mean().item()
        out["views_identity_recall_at_1_by_azimuth"] = [hit[azimuth == a].mean().item() for a in range(1, AZIMUTHS + 1)]
        out["views_identity_chance"] = 1 / len(cars)

        # guided translation: z^y of the next test car at the same (elevation, azimuth)
        partner = y[_index((car + 1) % len(cars), elevation, azimuth)]
        guided = run(lambda v, p: model.translate(v, "y", exclusive=model.encode_exclusive(p, "y")), x, partner,
                     images=True)
        recon = run(lambda v, w: model(v, w).y_hat, x, y, images=True)
        # nearest training car in pixels, per (car, elevation) of the test split, seen at the test view
        train_front = train_where[:, 2] == 1
        near = train_where[train_front][nearest(x[front].flatten(1).float(), tx[train_front].flatten(1).float()), 0]
        nearest_train = ty[_index(near[car * ELEVATIONS + elevation], elevation, azimuth)]
        baselines = {"guided": guided, "reconstruction": recon, "copy_x": x, "nearest_train": nearest_train}
        for name, pred in baselines.items():
            out[f"views_{name}_l1"], out[f"views_{name}_psnr"] = l1_psnr(pred, y)

        # factor probes
        codes = {"z_y": lambda v: model.encode_exclusive(v, "y"), "z_s": lambda v: model.encode_shared(v, "y")}
        test_codes = {k: run(fn, y) for k, fn in codes.items()}
        train_codes = {k: run(fn, ty) for k, fn in codes.items()}
        odd = azimuth % 2 == 1
        for k in codes:
            out[f"views_probe_azimuth_from_{k}"] = linear_probe(train_codes[k], train_where[:, 2],
                                                                test_codes[k], azimuth)
            out[f"views_probe_car_from_{k}"] = linear_probe(test_codes[k][odd], car[odd],
                                                            test_codes[k][~odd], car[~odd])
        out["views_probe_azimuth_chance"] = 1 / AZIMUTHS
        out["views_probe_car_chance"] = 1 / len(cars)
    return out


def views_grid(model, info, split: str = "test", *, elevation: int = 1, azimuths=range(1, AZIMUTHS + 1, 2),
               device=None, batch_size: int = 256):
    """Rows = test cars (true render over guided translation, z^y from the next car), columns = azimuths."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    cars, _ = _views(info, split)
    x, y = _load(info, split, model.cfg.image_size, batch_size, progress=False)
    azimuths = list(azimuths)
    car = torch.arange(len(cars)).repeat_interleave(len(azimuths))
    azimuth = torch.tensor(azimuths).repeat(len(cars))
    index, partner = _index(car, elevation, azimuth), _index((car + 1) % len(cars), elevation, azimuth)
    with torch.no_grad(), eval_mode(model):
        z_y = model.encode_exclusive(_to_float(y[partner], device), "y")
        guided = model.translate(_to_float(x[index], device), "y", exclusive=z_y).cpu()
    true = _to_float(y[index], "cpu")
    rows = []
    for c in range(len(cars)):
        part = slice(c * len(azimuths), (c + 1) * len(azimuths))
        rows += [true[part], guided[part]]
    tiles = torch.stack(rows)  # [2 × cars, azimuths, 3, S, S]
    title = f"{info.name} {split}: rows per car = true render / guided translation (elevation {elevation})"
    return tile_grid(tiles, headers=[f"az {a}" for a in azimuths], title=title)
