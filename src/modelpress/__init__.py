"""ModelPress: TensorFlow models from training to a compressed, validated, served artifact."""

__version__ = "0.1.0"
