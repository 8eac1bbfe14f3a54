"""Flax models: heads (and backbones, classifier) on top of qcxr.quantum circuits."""

from qcxr.models.heads import (
    SIMULATORS,
    CDLHead,
    DQCHead,
    DQCNNHead,
    QCNNHead,
    cdl_head,
    dqc_head,
    dqc_nn_head,
    qcnn_head,
)

__all__ = [
    "SIMULATORS",
    "CDLHead",
    "DQCHead",
    "DQCNNHead",
    "QCNNHead",
    "cdl_head",
    "dqc_head",
    "dqc_nn_head",
    "qcnn_head",
]
