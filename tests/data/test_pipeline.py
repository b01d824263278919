"""grain pipelines: shapes, determinism, exact state restore, process-count independence, foreground-aware patches,
and global device batches on 8 fake CPU devices."""

import itertools

import jax
import numpy as np
import pytest

from genesis_jax.data.normalize import quantize_unit
from genesis_jax.data.pipeline import finetune_dataset, global_batch, pretrain_dataset
from genesis_jax.train.mesh import batch_sharding, make_mesh
from genesis_jax.data.sources import ArraySource, ListSource, cube_source, volume_source
from tests.data.helpers import tiny_data_config


def _cubes(n=24, shape=(4, 4, 2)):
    # cube i is filled with i / 65535 so an element's identity survives decoding
    return ArraySource(cube=np.stack([np.full(shape, i, np.uint16) for i in range(n)]))


def _ids(batch):
    return np.rint(batch["cube"][:, 0, 0, 0, 0] * 65535).astype(int).tolist()


def test_pretrain_batches_shapes_and_epoch_permutations():
    ds = pretrain_dataset(_cubes(), batch_size=6, seed=0, shard_index=0, shard_count=1, num_epochs=2)
    batches = list(ds)
    assert len(batches) == 8
    assert batches[0]["cube"].shape == (6, 4, 4, 2, 1) and batches[0]["cube"].dtype == np.float32
    order = sum((_ids(b) for b in batches), [])
    first, second = order[:24], order[24:]
    assert sorted(first) == sorted(second) == list(range(24)) and first != second and first != list(range(24))


def test_same_seed_same_order_other_seed_other_order():
    take = lambda seed: [_ids(b) for b in itertools.islice(  # noqa: E731
        pretrain_dataset(_cubes(), batch_size=4, seed=seed, shard_index=0, shard_count=1), 10)]
    assert take(3) == take(3) and take(3) != take(4)


@pytest.mark.parametrize("factory", ["pretrain", "finetune"])
def test_iterator_state_restores_exactly(factory):
    if factory == "pretrain":
        make = lambda: pretrain_dataset(_cubes(), batch_size=4, seed=1, shard_index=0, shard_count=1,  # noqa: E731
                                        num_threads=3, prefetch=5)
    else:
        make = lambda: finetune_dataset(_volumes(), batch_size=3, seed=1, patch_shape=(8, 8, 4),  # noqa: E731
                                        shard_index=0, shard_count=1, num_threads=3)
    it = iter(make())
    for _ in range(7):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(3)]
    restored = iter(make())
    restored.set_state(state)
    for want in expected:
        got = next(restored)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_worker_processes_keep_order_and_state():
    make = lambda: pretrain_dataset(_cubes(), batch_size=4, seed=2, shard_index=0, shard_count=1,  # noqa: E731
                                    worker_count=2)
    it = iter(make())
    first = [_ids(next(it)) for _ in range(3)]
    state = it.get_state()
    expected = _ids(next(it))
    again = iter(make())
    assert [_ids(next(again)) for _ in range(3)] == first
    restored = iter(make())
    restored.set_state(state)
    assert _ids(next(restored)) == expected
    for i in (it, again, restored):
        i.close()


def test_global_batches_do_not_depend_on_the_number_of_processes():
    one = [sorted(_ids(b)) for b in itertools.islice(
        pretrain_dataset(_cubes(), batch_size=8, seed=5, shard_index=0, shard_count=1), 9)]
    shards = [itertools.islice(pretrain_dataset(_cubes(), batch_size=4, seed=5, shard_index=p, shard_count=2), 9)
              for p in range(2)]
    two = [sorted(_ids(a) + _ids(b)) for a, b in zip(*shards)]
    assert one == two
    # each process reads its own disjoint half of every global batch
    a, b = (pretrain_dataset(_cubes(), batch_size=4, seed=5, shard_index=p, shard_count=2) for p in range(2))
    first_a, first_b = set(_ids(next(iter(a)))), set(_ids(next(iter(b))))
    assert not first_a & first_b


def test_finite_runs_give_every_process_the_same_number_of_batches():
    counts = [len(list(pretrain_dataset(_cubes(25), batch_size=4, seed=0, shard_index=p, shard_count=3,
                                        num_epochs=1))) for p in range(3)]
    assert counts == [2, 2, 2]  # 25 -> 24 usable (two global batches of 12), not 3 + 2 + 2
    with pytest.raises(ValueError, match="do not fill one global batch"):
        pretrain_dataset(_cubes(5), batch_size=4, seed=0, shard_index=0, shard_count=2, num_epochs=1)
    with pytest.raises(ValueError, match="shard_index"):
        pretrain_dataset(_cubes(), batch_size=4, seed=0, shard_index=2, shard_count=2)


def _volumes():
    rng = np.random.default_rng(0)
    out = ListSource()
    for i in range(3):
        shape = (20 + 4 * i, 18, 12)
        label = np.zeros(shape, np.uint8)
        label[2 + i:4 + i, 3:5, 2:4] = 1  # an 8-voxel "nodule"
        out.append(dict(image=quantize_unit(rng.uniform(size=shape)), label=label))
    out.append(dict(image=quantize_unit(rng.uniform(size=(6, 6, 3))), label=np.zeros((6, 6, 3), np.uint8)))
    return out


def test_finetune_patches_are_foreground_aware():
    def foreground_share(fraction):
        labelled = ListSource(_volumes()[:3])
        ds = finetune_dataset(labelled, batch_size=4, seed=0, patch_shape=(8, 8, 4), foreground_fraction=fraction,
                              shard_index=0, shard_count=1)
        batches = list(itertools.islice(ds, 30))
        labels = np.concatenate([b["label"] for b in batches])
        assert batches[0]["image"].shape == (4, 8, 8, 4, 1) and labels.shape[1:] == (8, 8, 4, 1)
        assert labels.dtype == np.int32 and batches[0]["image"].dtype == np.float32
        return (labels.reshape(len(labels), -1).max(1) > 0).mean()

    always, never = foreground_share(1.0), foreground_share(0.0)
    assert always == 1.0  # centred on a foreground voxel every time
    assert never < 0.7  # uniform placement often misses the 8-voxel structure


def test_finetune_fixed_size_crops_with_class_labels():
    crops = ArraySource(image=quantize_unit(np.random.default_rng(0).uniform(size=(10, 8, 8, 4))),
                        label=np.arange(10) % 2)
    batch = next(iter(finetune_dataset(crops, batch_size=5, seed=0, shard_index=0, shard_count=1)))
    assert batch["image"].shape == (5, 8, 8, 4, 1) and batch["label"].shape == (5,)


def test_global_batch_on_eight_devices():
    assert jax.device_count() == 8
    local = next(iter(pretrain_dataset(_cubes(), batch_size=8, seed=0)))  # shards default to this process
    arrays = global_batch(local, batch_sharding(make_mesh()))
    cube = arrays["cube"]
    assert isinstance(cube, jax.Array) and cube.shape == (8, 4, 4, 2, 1)
    assert len(cube.sharding.device_set) == 8 and cube.addressable_shards[0].data.shape == (1, 4, 4, 2, 1)
    np.testing.assert_array_equal(np.asarray(cube), local["cube"])


def test_in_memory_sources_from_a_config(tmp_path):
    config = tiny_data_config(tmp_path)
    train, val = cube_source(config, "train"), cube_source(config, "validation")
    assert train[0]["cube"].dtype == np.uint16 and train[0]["cube"].shape == (16, 16, 8)
    assert not set(train._arrays["scan_id"]) & set(val._arrays["scan_id"])
    volumes = volume_source(config, "train")
    assert len(volumes) == 3 and volumes[0]["label"].dtype == np.uint8
    assert volumes[0]["label"].any()  # the phantom's liver
    batch = next(iter(finetune_dataset(volumes, batch_size=2, seed=0, patch_shape=(16, 16, 8), shard_index=0,
                                       shard_count=1)))
    assert batch["image"].shape == (2, 16, 16, 8, 1)


def test_several_organs_become_a_class_id_label_map(tmp_path):
    from genesis_jax.data.sources import organs

    config = tiny_data_config(tmp_path)
    config.organ = "liver, bone"
    assert organs(config) == ["liver", "bone"]
    volume = volume_source(config, "train")[0]
    assert set(np.unique(volume["label"])) == {0, 1, 2}  # background, liver (1st), bone (2nd)
    config.organ = "liver"
    binary = volume_source(config, "train")[0]["label"]
    np.testing.assert_array_equal(binary, volume["label"] == 1)  # the first organ is the binary label's
