// Overlay (seed 000: the machine shows its heat): the live temperature as a number over a rolling graph of the
// last overlay.seconds, colour-mapped cool (blue) -> hot (red). Drawn with blending into a viewport that is the
// panel (engine/overlay.py), after the effects; uv = (0, 0) is the panel's top-left.
#version 330 core

uniform sampler2D font;      // R8 atlas: glyph_count monospaced cells in one row, row 0 = top of the glyphs
uniform sampler2D text;      // R8: the glyph index of each character (index / 255)
uniform sampler2D history;   // R32F ring of samples; NaN = no sample yet
uniform int head;            // ring index of the newest sample
uniform int text_len;        // characters in `text`
uniform float lo;            // temperature at the graph's bottom / the cool end
uniform float hi;            // temperature at the graph's top / the hot end
uniform float opacity;       // panel opacity
uniform float gain;          // the master fader (blackout, opacity)
uniform float current;       // the newest temperature (NaN: none)
uniform float glyph_count;
uniform float cell_aspect;   // glyph cell width / height
uniform vec2 panel_px;       // panel size in pixels

in vec2 uv;
out vec4 frag;

const float TEXT_PART = 0.4;  // the number takes the top 40% of the panel, the graph the rest

vec3 heat(float u) {
    u = clamp(u, 0.0, 1.0);
    vec3 cool = vec3(0.15, 0.35, 1.0), teal = vec3(0.0, 0.85, 0.85), warm = vec3(1.0, 0.85, 0.1), hot = vec3(1.0, 0.15, 0.1);
    if (u < 1.0 / 3.0) return mix(cool, teal, u * 3.0);
    if (u < 2.0 / 3.0) return mix(teal, warm, u * 3.0 - 1.0);
    return mix(warm, hot, u * 3.0 - 2.0);
}

float level(float v) {
    return clamp((v - lo) / max(hi - lo, 1e-6), 0.0, 1.0);
}

void main() {
    vec4 c = vec4(0.0, 0.0, 0.0, 0.45);  // the panel's backing
    if (uv.y < TEXT_PART) {
        float char_h = panel_px.y * TEXT_PART * 0.9;
        float char_w = char_h * cell_aspect;
        vec2 px = vec2(uv.x * panel_px.x - panel_px.y * 0.04, (uv.y / TEXT_PART - 0.05) / 0.9 * char_h);
        int col = int(floor(px.x / char_w));
        if (px.x >= 0.0 && col < text_len && px.y >= 0.0 && px.y < char_h) {
            float glyph = floor(texelFetch(text, ivec2(col, 0), 0).r * 255.0 + 0.5);
            vec2 q = vec2((glyph + fract(px.x / char_w)) / glyph_count, px.y / char_h);
            float ink = texture(font, q).r;
            vec3 ink_colour = isnan(current) ? vec3(0.8) : mix(vec3(1.0), heat(level(current)), 0.6);
            c = mix(c, vec4(ink_colour, 1.0), ink);
        }
    } else {
        int n = textureSize(history, 0).x;
        int slot = min(int(uv.x * float(n)), n - 1);  // the newest sample at the right edge
        int idx = (head - (n - 1 - slot) + n) % n;
        float v = texelFetch(history, ivec2(idx, 0), 0).r;
        float gy = (1.0 - uv.y) / (1.0 - TEXT_PART);  // 0 at the panel's bottom, 1 at the graph's top
        if (!isnan(v)) {
            float l = level(v);
            float line = 2.0 / panel_px.y / (1.0 - TEXT_PART);  // two pixels
            if (gy <= l) {
                c = vec4(heat(l) * (gy > l - line ? 1.0 : 0.55), 0.9);
            }
        }
    }
    frag = vec4(c.rgb * gain, c.a * opacity);
}
