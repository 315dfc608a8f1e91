"""Remote agents (SPEC §11): the server's hub and service, the protocol, and the agent process."""

from .hub import AgentHub
from .link import AgentLink
from .service import (
    AgentError,
    AgentNameTaken,
    AgentNotFound,
    AgentService,
    EnrollmentRefused,
    InvalidAgentInput,
)

__all__ = [
    "AgentError",
    "AgentHub",
    "AgentLink",
    "AgentNameTaken",
    "AgentNotFound",
    "AgentService",
    "EnrollmentRefused",
    "InvalidAgentInput",
]
