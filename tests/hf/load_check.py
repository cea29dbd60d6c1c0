# Optional check (needs torch + transformers; not run by CI): HF transformers loads model dirs written by mlagent,
# its float64 logits equal ours, and its chat template and token ids equal `mlagent chat-template`.
# Usage: python tests/hf/load_check.py target/release/mlagent DIR [DIR ...]
import subprocess, sys, json, torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
B = sys.argv[1]
for d in sys.argv[2:]:
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float64).eval()
    v = m.config.vocab_size
    ids = [(i * 7919 + 13) % v for i in range(48)]
    with torch.no_grad():
        hf = m(torch.tensor([ids])).logits[0]
    r = subprocess.run([B, "logits", "--model", d, "--input-ids", ",".join(map(str, ids)), "--output", "/tmp/ours.safetensors"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ours = load_file("/tmp/ours.safetensors")["logits"].double()
    tok = AutoTokenizer.from_pretrained(d)
    msgs = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "List Files in the work folder"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    json.dump(msgs, open("/tmp/msgs.json", "w"))
    r = subprocess.run([B, "chat-template", "--model", d, "--messages", "/tmp/msgs.json", "--add-generation-prompt", "--format", "json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ct = json.loads(r.stdout.strip().splitlines()[-1])
    hf_ids = tok(text, add_special_tokens=False)["input_ids"]
    print(f"{d}: model_type={m.config.model_type} tie={m.config.tie_word_embeddings} vocab={v} "
          f"max|logits diff|={(ours - hf).abs().max().item():.2e} chat text equal={ct['text'] == text} ids equal={ct['input_ids'] == hf_ids}")
