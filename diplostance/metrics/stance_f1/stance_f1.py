"""`evaluate` metric module for target-specific stance classification.

Loaded by path (the Hub is not needed): `evaluate.load(diplostance.scoring.STANCE_METRIC_PATH)`.
Each prediction and reference is a list with one polarity index per target; -100 marks
a target the sentence does not annotate.
"""

import datasets
import evaluate

from diplostance.scoring import NEUTRAL_POLARITY, stance_scores

_DESCRIPTION = """Per target and polarity: precision, recall, F1, support. Per target: f_avg (mean F1
of the non-neutral polarities, the SemEval-2016 Task 6 metric) and macro-F1 over all
polarities. Overall: macro_f_avg and macro_f1, the means over the annotated targets. A target whose
gold labels are all neutral has f_avg None (undefined) and is left out of macro_f_avg (None if every
target's is undefined)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of lists of int, one polarity index per target.
    references: list of lists of int, same shape; -100 where the target is not annotated.
    targets: list of target names, in column order.
    polarities: list of polarity names, in index order.
    neutral: the polarity left out of f_avg (default "none").
Returns:
    dict with macro_f_avg, macro_f1, num_examples and targets.<target>.{f_avg, macro_f1, labels, confusion}.
"""

_CITATION = """@inproceedings{mohammad-etal-2016-semeval, title={SemEval-2016 Task 6: Detecting Stance in Tweets},
author={Mohammad, Saif and Kiritchenko, Svetlana and Sobhani, Parinaz and Zhu, Xiaodan and Cherry, Colin},
booktitle={Proceedings of SemEval-2016}, year={2016}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class StanceF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, targets, polarities, neutral=NEUTRAL_POLARITY):
        # An undefined f_avg (no favor or against gold label) is None, never reported as a score of 0.
        return stance_scores(predictions, references, list(targets), list(polarities), neutral, undefined=None)
