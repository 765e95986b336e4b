"""Features: sparse dictionaries (TopK SAEs and transcoders) on any model's sites, trained for every
layer from one forward stream, read and written in our format, SAELens's and sparsify's, evaluated
on held-out text, and read as key-value memories beside the FFN neurons."""

from interp.features.dictionary import Dictionary, DictionaryConfig
from interp.features.formats import check_for_model, load, save, save_saelens
from interp.features.sites import SITES, Site, get_site
from interp.features.train import TrainSettings, train

__all__ = [
    "SITES",
    "Dictionary",
    "DictionaryConfig",
    "Site",
    "TrainSettings",
    "check_for_model",
    "get_site",
    "load",
    "save",
    "save_saelens",
    "train",
]
