"""The model under audit: chat encoding, word alignment and the decision margin.

``text`` is the chat-LLM subject, ``vision`` the VLM subject built on it, ``margin`` the one
margin formula and its opening calibration, ``packing`` the packed KV-prefix scoring rows.
"""

from probe.subject.margin import MarginConfig
from probe.subject.text import EncodedPrompt, Subject

__all__ = ["EncodedPrompt", "MarginConfig", "Subject"]
