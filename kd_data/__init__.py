"""Reading and checking the CIFAR-100 dataset files: locate, download, unpickle safely, validate.

Plain Python and NumPy; TensorFlow is imported only to read `tf.io.gfile` URIs (gs://, s3://...).
"""
