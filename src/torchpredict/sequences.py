"""The documented path of the sequence heads (`from torchpredict.sequences import Seq2Seq`); they live in
torchpredict.heads.sequences."""

from torchpredict.heads.sequences import IGNORE_INDEX, Seq2Seq, TeacherForcing, TokenClassification

__all__ = ["IGNORE_INDEX", "Seq2Seq", "TeacherForcing", "TokenClassification"]
