"""Architectures: the paper's parameter counts, shapes at every size, init, and the public model API."""
from pathlib import Path

import pytest
import torch

from iiae.config import load_recipe
from iiae.errors import RecipeError
from iiae.models import IIAE

ROOT = Path(__file__).resolve().parents[1]


def _model(recipe: str, *overrides) -> IIAE:
    return IIAE.from_recipe(load_recipe(ROOT / "recipes" / recipe, list(overrides)))


@pytest.mark.parametrize("recipe,count", [
    ("mnist_cdcb.yaml", 16_801_830), ("facades.yaml", 16_801_830), ("maps.yaml", 16_801_830),
    ("cars.yaml", 46_952_230), ("sketchy.yaml", 2_470_784),
])
def test_paper_parameter_counts(recipe, count):
    assert _model(recipe).parameter_counts()["total"] == count


@pytest.mark.parametrize("size,shared,dec", [(32, [16, 32], [32, 16]), (64, [16, 32, 64], [64, 32, 16]),
                                              (128, [8, 16, 32, 64], [64, 32, 16, 8])])
def test_image_model_scales(size, shared, dec):
    m = _model("debug.yaml", f"model.image_size={size}", f"model.shared_channels={shared}",
               f"model.exclusive_channels={shared}", f"model.decoder_channels={dec}").eval()
    x = torch.rand(2, 3, size, size) * 2 - 1
    side = size >> (len(shared) + 1)
    assert m.encode_shared(x, "x").shape == (2, 4, side, side)
    assert m.encode_exclusive(x, "y").shape == (2, 4)
    out = m(x, x)
    assert out.x_hat.shape == x.shape and out.y_hat.shape == x.shape
    assert out.x_hat.abs().max() <= 1  # tanh output


def test_flat_and_mlp_shapes():
    flat = _model("cars.yaml", "model.image_size=64", "model.shared_channels=[8, 8, 8]",
                  "model.exclusive_channels=[8, 8]", "model.decoder_channels=[16, 8]").eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert flat.encode_shared(x, "x").shape == (2, 128)
    assert flat(x, x).x_hat.shape == x.shape
    mlp = _model("sketchy.yaml").eval()
    f = torch.randn(4, 512)
    assert mlp.encode_shared(f, "y").shape == (4, 64)
    assert mlp(f, f).y_hat.shape == (4, 512)


def test_paper_init():
    m = _model("mnist_cdcb.yaml")
    conv = m.parts.shared["x"][0]
    assert conv.weight.std().item() == pytest.approx(0.02, rel=0.05) and conv.bias.abs().max() == 0
    bn = m.parts.shared["x"][1]
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.01) and bn.eps == 1e-5 and bn.momentum == 0.1
    lin = m.parts.exclusive["x"].head.net[0]
    bound = (6 / (lin.in_features + lin.out_features)) ** 0.5
    assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.9 * bound


def test_translate_api_and_domains():
    m = _model("debug.yaml").eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    g = torch.Generator().manual_seed(0)
    diverse = m.translate(x, "y", n=2, generator=g)
    assert diverse.shape == (2, 3, 3, 32, 32)
    guided = m.translate(x, "y", exclusive=torch.zeros(3, 4))
    assert guided.shape == (3, 3, 32, 32)
    with pytest.raises(ValueError, match="domain"):
        m.encode_shared(x, "z")


def test_decoder_bn_untouched_by_translation():
    # auxiliary decoder passes must never update BN statistics (a bug of the official code)
    m = _model("debug.yaml")
    before = {k: v.clone() for k, v in m.state_dict().items() if "running" in k}
    m.translate(torch.rand(2, 3, 32, 32), "x", n=1)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert m.training  # translate does not change the mode


def test_eval_mode_is_deterministic_and_uses_means():
    m = _model("debug.yaml").eval()
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    a, b = m(x, y, seed=1), m(x, y, seed=2)
    assert torch.equal(a.z_s, b.z_s) and torch.equal(a.x_hat, b.x_hat) and torch.equal(a.kl.kl_s, b.kl.kl_s)
    assert torch.equal(a.z_x, m.encode_exclusive(x, "x"))


def test_seeded_sampling_is_reproducible():
    m = _model("debug.yaml")
    x, y = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    torch.manual_seed(0)
    a = m(x, y, seed=7)
    torch.manual_seed(0)
    b = m(x, y, seed=7)
    torch.manual_seed(0)
    c = m(x, y, seed=8)
    assert torch.equal(a.z_s, b.z_s) and not torch.equal(a.z_s, c.z_s)


def test_shared_input_norm_makes_shared_codes_contrast_invariant(tmp_path):
    """A dimmed, shifted copy of an image gets the same shared code; exclusive codes still see the change."""
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    dim = 0.25 * x - 0.7  # e.g. a dark digit instead of a bright one
    plain = _model("debug.yaml").eval()
    normed = _model("debug.yaml", "model.shared_input_norm=true").eval()
    normed.load_state_dict(plain.state_dict())  # no parameters of its own
    assert not torch.allclose(plain.encode_shared(dim, "y"), plain.encode_shared(x, "y"), atol=1e-3)
    # equal up to the variance floor: eps / var(dim) is 0.5 % here
    torch.testing.assert_close(normed.encode_shared(dim, "y"), normed.encode_shared(x, "y"), atol=1e-3, rtol=5e-3)
    assert not torch.allclose(normed.encode_exclusive(dim, "y"), normed.encode_exclusive(x, "y"), atol=1e-3)
    normed.save_pretrained(tmp_path)
    assert IIAE.from_pretrained(tmp_path).cfg.shared_input_norm == "image"  # `true` reads as "image"


def test_channel_input_norm_makes_shared_codes_colour_invariant():
    """Per channel: a digit in another colour (each channel scaled and shifted on its own) gets the same shared
    code, which the image-wide norm does not give; the exclusive code still sees the colour."""
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    recoloured = x * torch.tensor([0.9, 0.3, 0.6])[:, None, None] + torch.tensor([-0.1, 0.5, 0.2])[:, None, None]
    image = _model("debug.yaml", "model.shared_input_norm=image").eval()
    channel = _model("debug.yaml", "model.shared_input_norm=channel").eval()
    channel.load_state_dict(image.state_dict())
    assert not torch.allclose(image.encode_shared(recoloured, "y"), image.encode_shared(x, "y"), atol=1e-3)
    torch.testing.assert_close(channel.encode_shared(recoloured, "y"), channel.encode_shared(x, "y"), atol=1e-3,
                               rtol=5e-3)
    assert not torch.allclose(channel.encode_exclusive(recoloured, "y"), channel.encode_exclusive(x, "y"), atol=1e-3)
    with pytest.raises(RecipeError, match="shared_input_norm"):
        load_recipe(ROOT / "recipes" / "debug.yaml", ["model.shared_input_norm=pixel"])


def test_config_json_holds_the_model_only_and_old_whole_recipe_folders_load(tmp_path):
    import json

    recipe = load_recipe(ROOT / "recipes" / "debug.yaml", ["model.shared_input_norm=true"])
    model = IIAE.from_recipe(recipe).eval()
    model.save_pretrained(tmp_path / "new")
    assert set(json.loads((tmp_path / "new" / "config.json").read_text())) == {"model", "objective"}
    # a best/ folder written before the model owned its config: config.json is the whole resolved recipe
    old = tmp_path / "old"
    model.save_pretrained(old)
    (old / "config.json").write_text(json.dumps(recipe.to_dict()))
    loaded = IIAE.from_pretrained(old)
    assert loaded.cfg == recipe.model and loaded.objective == recipe.objective
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.encode_shared(x, "x"), model.encode_shared(x, "x"))


def test_bad_model_config_is_one_line():
    with pytest.raises(RecipeError, match=r"^config: model.z_shared: Input should be greater than 0 \(got 0\)$"):
        IIAE(model={"z_shared": 0}, objective={"beta": 0.2})


@pytest.mark.parametrize("recipe,overrides", [
    ("debug.yaml", []),
    ("cars.yaml", ["model.image_size=64", "model.shared_channels=[8, 8, 8]", "model.exclusive_channels=[8, 8]",
                   "model.decoder_channels=[16, 8]"]),
])
def test_film_decoder_starts_as_the_papers_and_trains_its_modulation(recipe, overrides, tmp_path):
    """`decoder_conditioning: film` adds one zero-initialised scale-and-shift per decoder block: at init the
    decoder computes exactly the concat decoder's function, and its FiLM weights get gradients from the start."""
    concat = _model(recipe, *overrides).eval()
    film = _model(recipe, *overrides, "model.decoder_conditioning=film").eval()
    missing, unexpected = film.load_state_dict(concat.state_dict(), strict=False)
    assert not unexpected and missing and all(".film." in k for k in missing)
    chans, z = film.cfg.decoder_channels, film.cfg.z_exclusive
    extra = film.parameter_counts()["decoder"] - concat.parameter_counts()["decoder"]
    assert extra == 2 * sum(2 * c * (z + 1) for c in chans)  # two decoders, a Linear(z, 2c) per block
    size = film.cfg.image_size
    x, y = torch.rand(2, 3, size, size) * 2 - 1, torch.rand(2, 3, size, size) * 2 - 1
    torch.testing.assert_close(film(x, y).y_hat, concat(x, y).y_hat, rtol=0, atol=0)
    film.train()
    film(x, y).y_hat.square().mean().backward()
    grads = [p.grad for name, p in film.named_parameters() if "decoder.y.film" in name and "weight" in name]
    assert len(grads) == len(chans) and all(g is not None and g.abs().sum() > 0 for g in grads)
    film.save_pretrained(tmp_path)
    assert IIAE.from_pretrained(tmp_path).cfg.decoder_conditioning == "film"


def test_film_modulates_features_by_the_exclusive_code():
    from iiae.models.blocks import FiLM

    f = FiLM(3, 2)
    torch.nn.init.normal_(f.linear.weight)
    h, z = torch.randn(4, 2, 5, 5), torch.randn(4, 3)
    gamma, beta = (z @ f.linear.weight.T + f.linear.bias).chunk(2, dim=1)
    torch.testing.assert_close(f(h, z), h * (1 + gamma[:, :, None, None]) + beta[:, :, None, None])
    with pytest.raises(RecipeError, match="decoder_conditioning: the mlp arch supports only concat"):
        load_recipe(ROOT / "recipes" / "sketchy.yaml", ["model.decoder_conditioning=film"])


@pytest.mark.parametrize("exclusive_channels,side", [([8, 16], 4), ([8, 16, 16], 2)])
def test_exclusive_map_tiles_over_z_s_and_decodes_a_constant_map_as_the_vector(exclusive_channels, side, tmp_path):
    """`exclusive_maps: [y]`: q(z^y|y) is a z_exclusive-channel map; Y's decoder tiles each cell over its block of
    z^s positions and FiLMs each position. A map constant over positions decodes exactly as that vector does
    (same decoder weights): the map generalises the paper's tiled vector. X keeps its vector."""
    common = ["model.decoder_conditioning=film", f"model.exclusive_channels={exclusive_channels}"]
    vector = _model("debug.yaml", *common)
    mapped = _model("debug.yaml", *common, "model.exclusive_maps=[y]")
    assert mapped.latent_shapes() == ([4, 4, 4], {"x": [4], "y": [4, side, side]})
    for net in (vector, mapped):  # non-zero FiLM, so the per-position path is exercised
        for name, p in net.named_parameters():
            if ".film." in name:
                torch.nn.init.normal_(p, std=0.5, generator=torch.Generator().manual_seed(len(name)))
    decoders = {k: v for k, v in vector.state_dict().items() if k.startswith("parts.decoder.")}
    assert not mapped.load_state_dict(decoders, strict=False).unexpected_keys
    vector.eval(), mapped.eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    z_s, z_d = vector.encode_shared(x, "x"), torch.randn(3, 4)
    constant = z_d[:, :, None, None].expand(3, 4, side, side)
    with torch.no_grad():
        torch.testing.assert_close(mapped.decode(z_s, constant, "y"), vector.decode(z_s, z_d, "y"))
        varied = constant.clone()
        varied[:, :, 0, 0] += 3.0  # one cell differs: the image changes, and only near that cell
        delta = (mapped.decode(z_s, varied, "y") - mapped.decode(z_s, constant, "y")).abs()
    assert delta[..., :8, :8].mean() > 1e-3
    if side == 4:  # 8-px cells: bilinear FiLM reaches the next cell, the transposed convs a few pixels more
        assert delta[..., 24:, 24:].max() == 0
    assert mapped.encode_exclusive(x, "y").shape == (3, 4, side, side)
    assert mapped.encode_exclusive(x, "x").shape == (3, 4)
    out = mapped(x, x, seed=0)
    assert out.z_y.shape == (3, 4, side, side) and out.z_x.shape == (3, 4) and out.kl.kl_y.shape == (3,)
    g = torch.Generator().manual_seed(0)
    assert mapped.translate(x, "y", n=2, generator=g).shape == mapped.translate(x, "x", n=2, generator=g).shape
    mapped.save_pretrained(tmp_path)
    loaded = IIAE.from_pretrained(tmp_path)
    assert loaded.cfg.exclusive_maps == ["y"]
    assert torch.equal(loaded.encode_exclusive(x, "y"), mapped.encode_exclusive(x, "y"))


def test_exclusive_maps_are_refused_where_they_cannot_tile():
    with pytest.raises(RecipeError, match="exclusive_maps: the flat arch has vector exclusive codes only"):
        load_recipe(ROOT / "recipes" / "cars.yaml", ["model.exclusive_maps=[x]"])
    with pytest.raises(RecipeError, match="exclusive_maps: the mlp arch has vector exclusive codes only"):
        load_recipe(ROOT / "recipes" / "sketchy.yaml", ["model.exclusive_maps=[x]"])
    with pytest.raises(RecipeError, match="exclusive_maps"):
        load_recipe(ROOT / "recipes" / "debug.yaml", ["model.exclusive_maps=[z]"])
    # 48 px: z^s 6x6 (two shared stages + head), a one-stage exclusive trunk + head gives a 12x12 map: no tiling
    with pytest.raises(RecipeError, match="a 12-px exclusive map does not tile the 6-px z\\^s map"):
        load_recipe(ROOT / "recipes" / "debug.yaml", ["model.image_size=48", "model.exclusive_channels=[8]",
                                                      "model.exclusive_maps=[x]"])


@pytest.mark.parametrize("recipe", ["debug.yaml", "cars_cpu.yaml", "sketchy.yaml"])  # image, flat, mlp
def test_sphere_puts_every_shared_mean_at_one_norm_and_leaves_the_rest(recipe, tmp_path):
    """`shared_code_norm: sphere`: the means of q(z^s|x,y), r^x and r^y have norm sqrt(size of z^s) on image and
    feature models, in training and in eval (the retrieval codes); the directions are the paper model's, and the
    exclusive posteriors and variances are untouched. The option round-trips through save_pretrained."""
    plain, sphere = _model(recipe), _model(recipe, "model.shared_code_norm=sphere")
    sphere.load_state_dict(plain.state_dict())  # no parameters of its own
    shape = plain.input_shape
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(3, *shape, generator=g) * 2 - 1, torch.rand(3, *shape, generator=g) * 2 - 1
    size = torch.Size(sphere.latent_shapes()[0]).numel()
    for model in (plain, sphere):
        model.train()
    a, b = plain(x, y, seed=1).posteriors, sphere(x, y, seed=1).posteriors
    for name in ("s", "rx", "ry"):
        (mu_a, lv_a), (mu_b, lv_b) = a[name], b[name]
        torch.testing.assert_close(mu_b.flatten(1).norm(dim=1), torch.full((3,), size ** 0.5))
        torch.testing.assert_close(mu_b, mu_a * (size ** 0.5 / mu_a.flatten(1).norm(dim=1)).view(-1, *[1] * (mu_a.dim() - 1)))
        torch.testing.assert_close(lv_b, lv_a)
    for name in ("x", "y"):
        torch.testing.assert_close(b[name][0], a[name][0])
    assert not torch.allclose(plain.eval().encode_shared(x, "x").flatten(1).norm(dim=1), torch.full((3,), size ** 0.5))
    codes = sphere.eval().encode_shared(y, "y")
    torch.testing.assert_close(codes.flatten(1).norm(dim=1), torch.full((3,), size ** 0.5))
    sphere.save_pretrained(tmp_path)
    loaded = IIAE.from_pretrained(tmp_path)
    assert loaded.cfg.shared_code_norm == "sphere"
    torch.testing.assert_close(loaded.encode_shared(y, "y"), codes)
