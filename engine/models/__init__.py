"""The models: the architecture registry (`registry`), their typed config (`config`), the `IIAE` model (`iiae`), its
objective (`objective`) and loading a trained one from a run, a model folder or the Hub (`loading`)."""
from iiae.models.iiae import IIAE, IIAEOutput, eval_mode
from iiae.models.registry import ARCHITECTURES, check_fits, input_kind

__all__ = ["ARCHITECTURES", "IIAE", "IIAEOutput", "check_fits", "eval_mode", "input_kind"]
