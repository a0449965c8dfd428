"""cassava: the CropNet cassava leaf-disease classifier, from local prediction to a V2 inference API."""

__version__ = "0.1.0"
