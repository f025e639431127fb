"""Reading whole fields of digits (postal codes, amounts, account numbers).

* :mod:`.marks`: the field's ink and marks (connected components, broken strokes merged);
* :mod:`.cuts`: geometric cuts of wide marks (least-ink seams, stroke cores);
* :mod:`.peel`: cuts by the learned splitter of touching digits;
* :mod:`.lattice`: every candidate reading of a field, :func:`segment` (:class:`SegmentConfig`);
* :mod:`.score`: scoring candidates, choosing the best chain (:class:`ScoreConfig`);
* :mod:`.read`: the reader (:func:`read_fields`), around one model batch.
"""

from recognizer.fields.config import SegmentConfig
from recognizer.fields.lattice import Candidate, Lattice, segment
from recognizer.fields.read import (
    FieldPlan,
    assemble_fields,
    model_inputs,
    prepare_fields,
    read_field,
    read_fields,
)
from recognizer.fields.score import ScoreConfig
from recognizer.results import FieldResult

__all__ = ["Candidate", "FieldPlan", "FieldResult", "Lattice", "ScoreConfig", "SegmentConfig",
           "assemble_fields", "model_inputs", "prepare_fields", "read_field", "read_fields",
           "segment"]
