"""`vqgen evaluate`: inputs, feature networks, metrics, the report's sections and its table/JSON."""

from vqgen.eval.inputs import EvaluateRequest
from vqgen.eval.report import results_table, write_json
from vqgen.eval.run import evaluate

__all__ = ["EvaluateRequest", "evaluate", "results_table", "write_json"]
