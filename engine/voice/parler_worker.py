"""The Parler-TTS worker: run by the Parler environment's own Python (engine voice --setup parler makes it), never
imported by the engine (parler-tts pins transformers==4.46.1, which the engine's environment does not have).

Protocol (the engine's ParlerBackend is the other end):
    stdout, once:  {"ready": true, "rate": 44100, "device": "cuda"}            (or {"error": "..."})
    stdin:         {"id": N, "text": "...", "description": "..."}              one JSON line per line to speak
    stdout:        {"id": N, "samples": K}  then K little-endian float32        per chunk, as the streamer yields it
                   {"id": N, "done": true}                                      (or {"id": N, "error": "..."})

Written against parler-tts 0.2.3's documented API (ParlerTTSForConditionalGeneration, ParlerTTSStreamer). --tiny
builds a randomly initialised model from small configs instead of loading one (tests: its words are noise).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading


def _out(obj, data: bytes = b"") -> None:
    sys.stdout.buffer.write((json.dumps(obj) + "\n").encode() + data)
    sys.stdout.buffer.flush()


def tiny_model():
    """A Parler-TTS with every part shrunk (T5 text encoder, DAC codec, decoder), randomly initialised."""
    from parler_tts import ParlerTTSConfig, ParlerTTSDecoderConfig, ParlerTTSForConditionalGeneration
    from parler_tts.dac_wrapper import DACConfig
    from transformers import ByT5Tokenizer, T5Config

    tokenizer = ByT5Tokenizer()  # byte-level: needs no vocabulary file, so no download
    text = T5Config(vocab_size=len(tokenizer), d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    audio = DACConfig(num_codebooks=2, model_bitrate=8, codebook_size=64, latent_dim=1024, frame_rate=86,
                      sampling_rate=44100)
    decoder = ParlerTTSDecoderConfig(vocab_size=65, max_position_embeddings=512, num_hidden_layers=1, ffn_dim=32,
                                     num_attention_heads=2, num_cross_attention_key_value_heads=2, hidden_size=16,
                                     num_codebooks=2, pad_token_id=64, bos_token_id=64, eos_token_id=63)
    config = ParlerTTSConfig.from_sub_models_config(text, audio, decoder)
    model = ParlerTTSForConditionalGeneration(config)
    model.generation_config.max_length = 64
    model.generation_config.decoder_start_token_id = 64
    model.generation_config.pad_token_id = 64
    model.generation_config.eos_token_id = 63
    return model, tokenizer, tokenizer


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--play-seconds", type=float, default=0.5, help="audio per streamed chunk")
    args = ap.parse_args()
    try:
        import torch
        from parler_tts import ParlerTTSForConditionalGeneration, ParlerTTSStreamer
        from transformers import AutoTokenizer

        device = ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu") \
            if args.device == "auto" else args.device
        dtype = torch.float16 if device == "cuda" else torch.float32
        if args.tiny:
            model, tokenizer, desc_tokenizer = tiny_model()
        else:
            model = ParlerTTSForConditionalGeneration.from_pretrained(args.model, torch_dtype=dtype, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(args.model, local_files_only=True)
            desc_tokenizer = AutoTokenizer.from_pretrained(model.config.text_encoder._name_or_path, local_files_only=True) \
                if getattr(model.config.text_encoder, "_name_or_path", "") else tokenizer
        model = model.to(device, dtype=dtype).eval()
        rate = int(model.audio_encoder.config.sampling_rate)
        frame_rate = float(model.audio_encoder.config.frame_rate)
    except Exception as e:
        _out({"error": f"{type(e).__name__}: {e}"})
        return 1
    _out({"ready": True, "rate": rate, "device": device})

    for line in sys.stdin:
        req = None
        try:
            req = json.loads(line)
            rid = req["id"]
            desc = desc_tokenizer(req.get("description") or "A calm voice.", return_tensors="pt").to(device)
            prompt = tokenizer(req["text"], return_tensors="pt").to(device)
            streamer = ParlerTTSStreamer(model, device=device, play_steps=max(1, int(frame_rate * args.play_seconds)))
            kwargs = dict(input_ids=desc.input_ids, attention_mask=desc.attention_mask, prompt_input_ids=prompt.input_ids,
                          prompt_attention_mask=prompt.attention_mask, streamer=streamer, do_sample=True, min_new_tokens=10)
            errors: list[BaseException] = []

            def generate():
                try:
                    with torch.inference_mode():
                        model.generate(**kwargs)
                except BaseException as e:  # reported after the stream ends
                    errors.append(e)
                    streamer.end()

            thread = threading.Thread(target=generate, daemon=True)
            thread.start()
            for chunk in streamer:
                if chunk.shape[0] == 0:
                    break
                data = chunk.astype("<f4").tobytes()
                _out({"id": rid, "samples": len(data) // 4}, data)
            thread.join()
            _out({"id": rid, "error": f"{type(errors[0]).__name__}: {errors[0]}"} if errors else {"id": rid, "done": True})
        except Exception as e:
            _out({"id": req.get("id") if isinstance(req, dict) else None, "error": f"{type(e).__name__}: {e}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
