"""MNIST / Fashion-MNIST IDX reader (stopnp/data/idx.py) on files written here in the exact format."""
import numpy as np
import pytest

from stopnp.data import DataError, idx
from test_data_formats import write_idx, write_mnist_folder


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_gz_and_raw(tmp_path, gz):
    ref = write_mnist_folder(str(tmp_path), gz=gz)
    for split, key in (("train", "train"), ("test", "t10k")):
        x, y = idx.read_mnist_split(str(tmp_path), split)
        assert x.shape == (len(ref[key][1]), 1, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
        assert np.array_equal(x[:, 0], ref[key][0]) and np.array_equal(y, ref[key][1])


def test_idx_truncated_names_file_and_offset(tmp_path):
    p = tmp_path / "a.idx"
    raw = write_idx(p, np.zeros((4, 28, 28)), 3, gz=False)
    p.write_bytes(raw[:200])
    with pytest.raises(DataError, match=r"a.idx: truncated at byte 200"):
        idx.read_idx(str(p))
    p.write_bytes(raw[:6])
    with pytest.raises(DataError, match=r"truncated at byte 6 \(header needs 16 bytes\)"):
        idx.read_idx(str(p))


def test_idx_wrong_magic(tmp_path):
    p = tmp_path / "a.idx"
    raw = write_idx(p, np.zeros((4, 28, 28)), 3, gz=False)
    p.write_bytes(b"\x00\x00\x09\x03" + raw[4:])
    with pytest.raises(DataError, match="bad magic number 0x00000903"):
        idx.read_idx(str(p))
    p.write_bytes(raw)
    with pytest.raises(DataError, match="3 dimensions, expected 1"):
        idx.read_idx(str(p), expect_ndim=1)


def test_idx_corrupt_gzip(tmp_path):
    write_mnist_folder(str(tmp_path))
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:50])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: cannot read"):
        idx.read_mnist_split(str(tmp_path), "train")


def test_idx_count_mismatch_and_label_range_and_missing(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", np.zeros((4, 28, 28)), 3)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(5), 1)
    with pytest.raises(DataError, match="4 images but .* 5 labels"):
        idx.read_mnist_split(str(tmp_path), "train")
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(4, 11), 1)
    with pytest.raises(DataError, match="label 11 out of range"):
        idx.read_mnist_split(str(tmp_path), "train")
    with pytest.raises(DataError, match="download the four MNIST IDX files"):
        idx.read_mnist_split(str(tmp_path / "empty"), "test")
