"""tf.data input from the CifarExampleGen's TFRecords, and the shared preprocessing.

Decoded uint8 images are cached in memory (150 MB for the full train split), so after the
first epoch the pipeline only shuffles, batches, augments (vectorised over the batch, with
per-image random draws) and normalizes, in parallel and ahead of the model (prefetch).
"""

from __future__ import annotations

import tensorflow as tf

from kd_trainer.contract import (IMAGE_KEY, IMPRESSION_BETA_KEY, IMPRESSION_CLASS_KEY, IMPRESSION_IMAGE_KEY,
                                 IMPRESSION_TARGET_KEY, INDEX_KEY, LABEL_KEY)
from kd_trainer.model_specs import DEFAULT_INPUT_NORMALIZATION, INPUT_NORMALIZATIONS

IMAGE_SHAPE = (32, 32, 3)
PAD = 4
# Epoch e of seed s shuffles and augments with seed s * stride + e: distinct for every run
# shorter than `stride` epochs.
EPOCH_SEED_STRIDE = 1_000_003

_FEATURES = {
    IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
    LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
}
NUM_CLASSES = 100
# The train split of a DataImpressions artifact (components/data_impressions.py): float
# images in pixel units (HWC, RGB, 0-255 scale, unclipped), the soft target each was
# optimised for, and the class and concentration scale that target was drawn with.
IMPRESSION_FEATURES = {
    IMPRESSION_IMAGE_KEY: tf.io.FixedLenFeature([IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2]], tf.float32),
    IMPRESSION_TARGET_KEY: tf.io.FixedLenFeature([NUM_CLASSES], tf.float32),
    IMPRESSION_CLASS_KEY: tf.io.FixedLenFeature([], tf.int64),
    IMPRESSION_BETA_KEY: tf.io.FixedLenFeature([], tf.float32),
}


def decode_images(image_raw: tf.Tensor) -> tf.Tensor:
    """Serialized HWC uint8 bytes [...] -> uint8 images [..., 32, 32, 3]."""
    flat = tf.io.decode_raw(image_raw, tf.uint8)
    return tf.reshape(flat, tf.concat([tf.shape(image_raw), IMAGE_SHAPE], axis=0))


def normalize(images: tf.Tensor, normalization: str = DEFAULT_INPUT_NORMALIZATION) -> tf.Tensor:
    """uint8 (or pixel-valued float) RGB images -> float32, per-channel standardized with the
    statistics named `normalization` (model_specs.INPUT_NORMALIZATIONS): the models' input."""
    mean, std = INPUT_NORMALIZATIONS[normalization]
    scaled = tf.cast(images, tf.float32) / 255.0
    return (scaled - tf.constant(mean)) / tf.constant(std)


def denormalize(images: tf.Tensor, normalization: str = DEFAULT_INPUT_NORMALIZATION) -> tf.Tensor:
    """Inverse of `normalize`: model inputs -> float RGB pixel values on the 0-255 scale."""
    mean, std = INPUT_NORMALIZATIONS[normalization]
    return (tf.convert_to_tensor(images, tf.float32) * tf.constant(std) + tf.constant(mean)) * 255.0


def parse_examples(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Batch of serialized tf.Examples -> (uint8 images, int32 fine labels)."""
    features = tf.io.parse_example(serialized, _FEATURES)
    return decode_images(features[IMAGE_KEY]), tf.cast(features[LABEL_KEY], tf.int32)


def parse_indexed_examples(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Batch of serialized tf.Examples -> (uint8 images, int32 fine labels, int32 example indices)."""
    features = tf.io.parse_example(serialized, {**_FEATURES, INDEX_KEY: tf.io.FixedLenFeature([], tf.int64)})
    return (decode_images(features[IMAGE_KEY]), tf.cast(features[LABEL_KEY], tf.int32),
            tf.cast(features[INDEX_KEY], tf.int32))


def parse_impressions(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Batch of serialized data impressions -> (float pixel images, int32 source classes).

    The source class (the class whose similarity row parametrised the impression's target)
    is no label: the zero_shot method ignores it, and the training `accuracy` it yields
    is the student's agreement with it.
    """
    features = tf.io.parse_example(serialized, IMPRESSION_FEATURES)
    images = tf.reshape(features[IMPRESSION_IMAGE_KEY], tf.concat([tf.shape(serialized), IMAGE_SHAPE], axis=0))
    return images, tf.cast(features[IMPRESSION_CLASS_KEY], tf.int32)


def augment_batch(images: tf.Tensor, seed: tf.Tensor, one_crop_per_batch: bool = False) -> tf.Tensor:
    """Per-image random horizontal flip, 4-pixel reflect pad and random 32x32 crop, for a
    whole uint8 batch [B, 32, 32, 3] at once (one op per batch instead of per image).

    `one_crop_per_batch` reproduces a seed bug (train_w_distill.py:211-213: `tf.random_crop`
    of the whole batch): every image of the batch is cropped at the same offset.
    """
    batch = tf.shape(images)[0]
    flip_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    flip = tf.random.stateless_uniform([batch], flip_seed) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    padded = tf.pad(images, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform([1 if one_crop_per_batch else batch, 2], crop_seed, minval=0,
                                          maxval=2 * PAD + 1, dtype=tf.int32)
    offsets = tf.broadcast_to(offsets, [batch, 2])
    window = tf.range(IMAGE_SHAPE[0])
    rows = offsets[:, :1] + window[None, :]
    cols = offsets[:, 1:] + window[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)


def _files(file_pattern: str | list[str]) -> list[str]:
    patterns = [file_pattern] if isinstance(file_pattern, str) else file_pattern
    files = sorted(f for pattern in patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {patterns}")
    return files


def _parsed(files: list[str], parse) -> tf.data.Dataset:
    records = tf.data.TFRecordDataset(files, compression_type="GZIP", num_parallel_reads=tf.data.AUTOTUNE)
    return (records.batch(1024)
            .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
            .unbatch()
            .cache())


def _first_example_features(files: list[str]) -> set[str] | None:
    """Feature names of the first record of `files` (None when they hold no record)."""
    first = next(iter(tf.data.TFRecordDataset(files[:1], compression_type="GZIP")), None)
    return set(tf.train.Example.FromString(first.numpy()).features.feature) if first is not None else None


def load_records(file_pattern: str | list[str]) -> tf.data.Dataset:
    """Unbatched, cached (uint8 image, label) pairs from gzipped TFRecord files."""
    return _parsed(_files(file_pattern), parse_examples)


def load_indexed_records(file_pattern: str | list[str], method: str) -> tf.data.Dataset:
    """Unbatched, cached (uint8 image, label, example index) triples, for `method`'s per-example state.

    Fails before any training, naming the file, when the examples have no `index` feature
    (written by a CifarExampleGen older than the feature).
    """
    files = _files(file_pattern)
    present = _first_example_features(files)
    if present is not None and INDEX_KEY not in present:
        raise ValueError(f"{files[0]} has no '{INDEX_KEY}' feature (found {sorted(present)}): method '{method}' "
                         "keeps per-example state indexed by it; these examples come from an older CifarExampleGen, "
                         "re-run the ExampleGen to write it")
    return _parsed(files, parse_indexed_examples)


def load_impressions(file_pattern: str | list[str]) -> tf.data.Dataset:
    """Unbatched, cached (float pixel image, source class) pairs from a DataImpressions train split.

    Fails, naming the files, when they hold no impressions (e.g. real CIFAR examples).
    """
    files = _files(file_pattern)
    present = _first_example_features(files)
    missing = sorted(set(IMPRESSION_FEATURES) - (present or set()))
    if present is not None and missing:
        raise ValueError(f"{files[0]} holds no data impressions (features {missing} absent, found {sorted(present)}): "
                         "method 'zero_shot' trains on the DataImpressions component's examples")
    return _parsed(files, parse_impressions)


def count(dataset: tf.data.Dataset) -> int:
    """Number of elements; iterating a cached dataset to its end also fills the cache."""
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def training_batches(records: tf.data.Dataset, batch_size: int, seed: int, num_examples: int,
                     first_epoch: int, epochs: int, one_crop_per_batch: bool = False,
                     normalization: str = DEFAULT_INPUT_NORMALIZATION) -> tf.data.Dataset:
    """Epochs `first_epoch` .. `first_epoch + epochs - 1` of shuffled, augmented, normalized
    full batches (the remainder of each epoch is dropped). Elements are (images, labels), or
    (images, labels, indices) from `load_indexed_records`.

    Epoch e's order and augmentation are stateless functions of (seed, e), so a run resumed
    at epoch e sees exactly the batches an uninterrupted run would have seen. Each epoch
    permutes the whole cached split at once (a full-buffer shuffle, as before).
    """
    def one_epoch(epoch: tf.Tensor, split: tuple[tf.Tensor, ...]) -> tf.data.Dataset:
        epoch_key = tf.cast(seed, tf.int64) * EPOCH_SEED_STRIDE + epoch
        order = tf.random.experimental.stateless_shuffle(tf.range(num_examples), seed=tf.stack([epoch_key, -1]))
        batches = (tf.data.Dataset.from_tensor_slices(tuple(tf.gather(part, order) for part in split))
                   .batch(batch_size, drop_remainder=True))
        return batches.enumerate().map(
            lambda step, batch: (normalize(augment_batch(batch[0], tf.stack([epoch_key, step]), one_crop_per_batch),
                                           normalization),
                                 *batch[1:]),
            num_parallel_calls=tf.data.AUTOTUNE)

    whole_split = records.batch(num_examples, drop_remainder=True)
    return (tf.data.Dataset.zip(tf.data.Dataset.range(first_epoch, first_epoch + epochs), whole_split.repeat())
            .flat_map(one_epoch)
            .prefetch(tf.data.AUTOTUNE))


def evaluation_batches(records: tf.data.Dataset, batch_size: int,
                       normalization: str = DEFAULT_INPUT_NORMALIZATION) -> tf.data.Dataset:
    """Unaugmented, normalized batches in file order (the last one may be smaller)."""
    return (records.batch(batch_size)
            .map(lambda images, labels: (normalize(images, normalization), labels), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))
