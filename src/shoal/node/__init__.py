"""The processor node: registers, owns a section, claims and runs jobs, heartbeats, recovers."""

from shoal.node.config import NodeConfig
from shoal.node.lifecycle import Node

__all__ = ["Node", "NodeConfig"]
