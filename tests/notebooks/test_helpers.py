"""The notebooks' library helpers: genesis_jax.visualize (slices, grids) and genesis_jax.models.timing."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from genesis_jax.visualize import show_grid, show_slices, show_triplets, slice_of  # noqa: E402


def test_slice_of_takes_the_middle_slice_and_drops_the_channel():
    volume = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)
    np.testing.assert_array_equal(slice_of(volume), volume[:, :, 3])
    np.testing.assert_array_equal(slice_of(volume[..., None], axis=0, index=1), volume[1])
    np.testing.assert_array_equal(slice_of(volume[:, :, 0]), volume[:, :, 0])
    with pytest.raises(ValueError, match="got shape"):
        slice_of(np.zeros((2, 2, 2, 2, 2)))


def test_grids_have_one_panel_per_entry_and_contours_for_overlays():
    import matplotlib.pyplot as plt

    image = np.random.default_rng(0).random((8, 8, 4)).astype(np.float32)
    mask = np.zeros((8, 8, 4), bool)
    mask[2:6, 2:6] = True
    fig = show_grid([{"a": image, "b": image}, {"c": image}], overlays=[mask, None], title="t")
    axes = fig.axes
    assert len(axes) == 4 and [a.get_title() for a in axes[:3]] == ["a", "b", "c"]
    assert axes[0].collections and not axes[2].collections  # the contour is drawn on the first row only
    assert not axes[3].axison  # the missing panel of the short row is blanked
    plt.close(fig)
    fig = show_slices({"x": image}, overlay=mask)
    assert len(fig.axes) == 1
    plt.close(fig)
    fig = show_triplets(np.stack([image] * 3), np.stack([image] * 3), np.stack([image] * 3), max_rows=2)
    assert [a.get_title() for a in fig.axes] == ["input", "prediction", "target"] * 2
    plt.close(fig)
    with pytest.raises(ValueError, match="overlays"):
        show_grid([{"a": image}], overlays=[mask, mask])
    with pytest.raises(ValueError, match="at least one"):
        show_grid([])


def test_forward_seconds_times_a_compiled_pass():
    import jax
    import jax.numpy as jnp

    from genesis_jax.models import UNetPlusPlus
    from genesis_jax.models.timing import forward_seconds

    x = jnp.zeros((2, 16, 16, 1))
    full = UNetPlusPlus(ndim=2, base_width=2, depth=2, dropout=0.0)
    variables = jax.jit(full.init)(jax.random.key(0), x)
    pruned = UNetPlusPlus(ndim=2, base_width=2, depth=2, dropout=0.0, prune_level=1)
    seconds = forward_seconds(pruned, variables, x, repeats=3)  # the pruned net runs on the full parameters
    assert 0.0 < seconds < 5.0
    with pytest.raises(ValueError, match="repeats"):
        forward_seconds(pruned, variables, x, repeats=0)


def test_overlay_png_keeps_the_notebook_backend(tmp_path):
    """Library figures must not switch matplotlib's backend (a notebook's inline plots would silently stop)."""
    import matplotlib

    from genesis_jax.evaluation.overlays import save_overlay

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        image = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
        label = np.zeros((8, 8, 3), np.uint8)
        label[2:5, 2:5, 1] = 1
        path = save_overlay(image, label, label.astype(np.float32), tmp_path / "o.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)


def test_selection_thumbnails_keep_the_notebook_backend():
    import matplotlib

    from genesis_jax.active.session import _thumbnail_sheet

    before = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        png = _thumbnail_sheet(np.random.default_rng(0).random((3, 6, 6, 6, 1)), ["a", "b", "c"])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(before)
