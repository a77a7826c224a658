"""Stage 1: the hierarchical multi-modal autoencoder (paper Sec. 3.1)."""

from .config import AutoencoderConfig, paper_config, tiny_config
from .discriminator import AVDiscriminator
from .model import HierarchicalAVAutoencoder, SemanticFeatures

__all__ = ["AVDiscriminator", "AutoencoderConfig", "HierarchicalAVAutoencoder", "SemanticFeatures",
           "paper_config", "tiny_config"]
