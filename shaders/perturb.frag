// Perturbation (seed 001's "small random changes"): animated noise displacement plus global brightness and
// hue jitter. amount = 0 is exactly the identity (texelFetch of the same texel, no filtering).
#version 330 core
#include "common.glsl"

uniform sampler2D src;
uniform float amount;             // 0..1 master
uniform float scale;              // noise cells across the frame
uniform float speed;              // noise evolution per second
uniform float displace;           // max displacement at amount = 1, in frame fractions
uniform float brightness_jitter;  // +- linear gain at amount = 1
uniform float hue_jitter;         // +- turns at amount = 1
uniform float time;               // seconds
uniform float aspect;             // width / height
uniform ivec2 target_size;        // size of the texture drawn into

in vec2 uv;
out vec4 frag;

void main() {
    if (amount <= 0.0) {
        // Same size: the exact texel. The img2img feedback source may be smaller than the output: resample.
        frag = textureSize(src, 0) == target_size ? texelFetch(src, ivec2(gl_FragCoord.xy), 0) : texture(src, uv);
        return;
    }
    float tt = time * speed;
    vec2 p = uv * scale * vec2(aspect, 1.0);
    vec2 d = vec2(snoise(vec3(p, tt)), snoise(vec3(p + vec2(17.31, -9.73), tt + 4.1)));
    vec4 c = texture(src, uv + d * displace * amount);
    // Global jitter: one value per frame, smooth over time.
    float gain = 1.0 + brightness_jitter * amount * snoise(vec3(tt * 0.7, 3.1, 0.5));
    float hue = hue_jitter * amount * snoise(vec3(tt * 0.5, 7.7, 1.5)) * TAU;
    c.rgb = hue_rotate(c.rgb, hue) * gain;
    frag = vec4(clamp(c.rgb, 0.0, 1.0), c.a);
}
