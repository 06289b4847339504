// Fit: the generator's image (its native size) framed in the output (--size WxH) by output.fit / zoom / pan.
// src_uv = (uv - 0.5) * scale + 0.5 + offset (engine/output.py fit_transform); outside the image is background.
// Skipped (never drawn) when the generator's image already is the output, unscaled and unpanned.
#version 330 core

uniform sampler2D src;
uniform vec2 scale;
uniform vec2 offset;
uniform vec3 background;

in vec2 uv;
out vec4 frag;

void main() {
    vec2 q = (uv - 0.5) * scale + 0.5 + offset;
    // Half a texel of tolerance: the edge texels of an exactly fitting image are never background.
    vec2 half_texel = 0.5 / vec2(textureSize(src, 0));
    if (any(lessThan(q, -half_texel)) || any(greaterThan(q, 1.0 + half_texel))) {
        frag = vec4(background, 1.0);
        return;
    }
    frag = vec4(texture(src, q).rgb, 1.0);
}
