"""Model folders of other tools -> medseg model folders (``medseg import ...``): read their JSON and weights only,
never their code, and write the one model-folder contract of :mod:`medseg.config.model_folder`."""

from medseg.importers.nnunet import ImportReport, import_nnunet

__all__ = ["ImportReport", "import_nnunet"]
