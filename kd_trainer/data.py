"""tf.data input from the CifarExampleGen's TFRecords, and the shared preprocessing.

Decoded uint8 images are cached in memory (150 MB for the full train split), so after the
first epoch the pipeline only shuffles, batches, augments (vectorised over the batch, with
per-image random draws) and normalizes, in parallel and ahead of the model (prefetch).
"""

from __future__ import annotations

import tensorflow as tf

IMAGE_SHAPE = (32, 32, 3)
# Per-channel statistics of the CIFAR-100 training set, in RGB order.
CHANNEL_MEAN = (0.5071, 0.4865, 0.4409)
CHANNEL_STD = (0.2673, 0.2564, 0.2762)
PAD = 4

_FEATURES = {
    "image_raw": tf.io.FixedLenFeature([], tf.string),
    "fine_label": tf.io.FixedLenFeature([], tf.int64),
}


def decode_images(image_raw: tf.Tensor) -> tf.Tensor:
    """Serialized HWC uint8 bytes [...] -> uint8 images [..., 32, 32, 3]."""
    flat = tf.io.decode_raw(image_raw, tf.uint8)
    return tf.reshape(flat, tf.concat([tf.shape(image_raw), IMAGE_SHAPE], axis=0))


def normalize(images: tf.Tensor) -> tf.Tensor:
    """uint8 RGB images -> float32, per-channel standardized (the models' input)."""
    scaled = tf.cast(images, tf.float32) / 255.0
    return (scaled - tf.constant(CHANNEL_MEAN)) / tf.constant(CHANNEL_STD)


def parse_examples(serialized: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Batch of serialized tf.Examples -> (uint8 images, int32 fine labels)."""
    features = tf.io.parse_example(serialized, _FEATURES)
    return decode_images(features["image_raw"]), tf.cast(features["fine_label"], tf.int32)


def augment_batch(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Per-image random horizontal flip, 4-pixel reflect pad and random 32x32 crop, for a
    whole uint8 batch [B, 32, 32, 3] at once (one op per batch instead of per image)."""
    batch = tf.shape(images)[0]
    flip_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    flip = tf.random.stateless_uniform([batch], flip_seed) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    padded = tf.pad(images, [[0, 0], [PAD, PAD], [PAD, PAD], [0, 0]], mode="REFLECT")
    offsets = tf.random.stateless_uniform([batch, 2], crop_seed, minval=0, maxval=2 * PAD + 1, dtype=tf.int32)
    window = tf.range(IMAGE_SHAPE[0])
    rows = offsets[:, :1] + window[None, :]
    cols = offsets[:, 1:] + window[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, cols, axis=2, batch_dims=1)


def load_records(file_pattern: str | list[str]) -> tf.data.Dataset:
    """Unbatched, cached (uint8 image, label) pairs from gzipped TFRecord files."""
    patterns = [file_pattern] if isinstance(file_pattern, str) else file_pattern
    files = sorted(f for pattern in patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        raise FileNotFoundError(f"no TFRecord files match {patterns}")
    records = tf.data.TFRecordDataset(files, compression_type="GZIP", num_parallel_reads=tf.data.AUTOTUNE)
    return (records.batch(1024)
            .map(parse_examples, num_parallel_calls=tf.data.AUTOTUNE)
            .unbatch()
            .cache())


def count(dataset: tf.data.Dataset) -> int:
    """Number of elements; iterating a cached dataset to its end also fills the cache."""
    return int(dataset.reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))


def training_batches(records: tf.data.Dataset, batch_size: int, seed: int, num_examples: int) -> tf.data.Dataset:
    """Reshuffled each epoch, augmented, normalized full batches (the remainder is dropped)."""
    # Stateless augmentation driven by a seeded random stream: reproducible, and different
    # in every epoch because the stream is re-randomized on each iteration.
    augment_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    batches = (records.shuffle(num_examples, seed=seed, reshuffle_each_iteration=True)
               .batch(batch_size, drop_remainder=True))
    return (tf.data.Dataset.zip(batches, augment_seeds)
            .map(lambda batch, batch_seed: (normalize(augment_batch(batch[0], batch_seed)), batch[1]),
                 num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def evaluation_batches(records: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    """Unaugmented, normalized batches in file order (the last one may be smaller)."""
    return (records.batch(batch_size)
            .map(lambda images, labels: (normalize(images), labels), num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))
