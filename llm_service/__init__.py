"""LLMService: chat orchestration with tool calling, async tools and model providers.

    host = await start_llm(LLMSettings.from_env())
    ...                       # clients dial host.target
    await host.stop()

See docs/llm.md.
"""

from llm_service.service import LLMServiceHost, start_llm
from llm_service.settings import LLMSettings

__all__ = ["LLMServiceHost", "LLMSettings", "start_llm"]
