"""Model providers behind one small protocol, chosen by name per request.

``offline`` (the default) is a rule-based stand-in that needs nothing;
``openai`` speaks the OpenAI chat completions format (OpenAI, GLM, Qwen,
DeepSeek, vLLM, Ollama); ``gemini`` uses Google's Gemini API.
"""

from __future__ import annotations

from llm_service.providers.base import (
    ModelTurn,
    Provider,
    ProviderError,
    ProviderRequest,
    TextChunk,
)
from llm_service.providers.offline import OfflineProvider
from llm_service.settings import LLMSettings

PROVIDER_NAMES = ("offline", "openai", "gemini")

__all__ = [
    "PROVIDER_NAMES",
    "ModelTurn",
    "Provider",
    "ProviderError",
    "ProviderRequest",
    "Providers",
    "TextChunk",
]


class Providers:
    """Provider instances by name, made on first use (SDK clients are reused)."""

    def __init__(self, settings: LLMSettings) -> None:
        self._settings = settings
        self._made: dict[str, Provider] = {"offline": OfflineProvider()}

    def get(self, name: str) -> Provider:
        """The provider called ``name`` (empty: the default); raises ProviderError."""
        name = name or self._settings.default_provider
        provider = self._made.get(name)
        if provider is None:
            provider = self._made[name] = self._make(name)
        return provider

    def _make(self, name: str) -> Provider:
        s = self._settings
        if name == "openai":
            if not s.openai_api_key:
                raise ProviderError(
                    "not_configured",
                    "provider 'openai' needs an API key: set TOOLCALL_OPENAI_API_KEY "
                    "(or OPENAI_API_KEY)",
                )
            from llm_service.providers.openai_compat import OpenAICompatProvider

            return OpenAICompatProvider(
                api_key=s.openai_api_key,
                base_url=s.openai_base_url,
                default_model=s.openai_model,
                timeout_s=s.provider_timeout_s,
                max_retries=s.provider_max_retries,
                image_input=s.openai_image_input,
            )
        if name == "gemini":
            if not s.gemini_api_key:
                raise ProviderError(
                    "not_configured",
                    "provider 'gemini' needs an API key: set TOOLCALL_GEMINI_API_KEY "
                    "(or GEMINI_API_KEY / GOOGLE_API_KEY)",
                )
            from llm_service.providers.gemini import GeminiProvider

            return GeminiProvider(
                api_key=s.gemini_api_key,
                base_url=s.gemini_base_url,
                default_model=s.gemini_model,
                timeout_s=s.provider_timeout_s,
                max_retries=s.provider_max_retries,
            )
        raise ProviderError(
            "unknown_provider",
            f"unknown provider {name[:64]!r}; known providers: {', '.join(PROVIDER_NAMES)}",
        )

    async def close(self) -> None:
        made, self._made = self._made, {}
        for provider in made.values():
            await provider.close()
