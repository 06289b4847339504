"""Seed 004's ePaper picture frame: a Raspberry Pi with a Pimoroni Inky panel, four buttons and a microphone, asking an
`engine serve` for new art.

    bash engine/clients/epaper/setup.sh                      # once, on the Pi
    bash engine/clients/epaper/run.sh http://SERVER:8000     # or: python3 -m engine.clients.epaper --server URL

Buttons (the Inky Impression's A-D on GPIO 5, 6, 16, 24):
    A  the same prompt again (a new seed)
    B  a new prompt from the server's prompt file
    C  speak a prompt: records 3 s, /transcribe, then /generate with the words heard
    D  auto mode on/off: the server makes a new picture every --auto-minutes; the frame polls /latest

Rooms: client.py (HTTP to engine serve, retries with backoff), frame.py (what each button does, the panel's
messages), panels.py (the Inky panel; a folder of PNGs for tests and for trying it without a panel), inputs.py
(gpiozero buttons; the microphone through sounddevice, or a WAV file standing in). Standard library and Pillow only,
plus inky, gpiozero and sounddevice on the Pi; nothing of the rest of engine.
"""
