// Feedback blend (seed 001): out = mix(new frame, previous output, alpha)
//                                = (1 - alpha) * new + alpha * previous.
#version 330 core

uniform sampler2D new_frame;
uniform sampler2D previous;
uniform float alpha;

out vec4 frag;

void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    frag = mix(texelFetch(new_frame, p, 0), texelFetch(previous, p, 0), alpha);
}
