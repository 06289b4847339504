// Present: the accumulated output (RGBA16F) to an 8-bit target: the sinks' RGBA8 texture (flip_y = 0) or a
// window's default framebuffer (flip_y = 1, GL's origin is bottom-left; letterboxing is done by the viewport).
// gain is the master fader (output.opacity x blackout fade): 1 passes the picture unchanged.
#version 330 core

uniform sampler2D src;
uniform bool flip_y;
uniform float gain;

in vec2 uv;
out vec4 frag;

void main() {
    vec2 q = flip_y ? vec2(uv.x, 1.0 - uv.y) : uv;
    frag = vec4(clamp(texture(src, q).rgb, 0.0, 1.0) * gain, 1.0);
}
