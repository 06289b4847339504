// One triangle that covers the viewport, generated from gl_VertexID (no vertex buffer).
// uv is in image space: uv = (0, 0) is the first texel row in memory, which the engine keeps as the TOP of
// the image everywhere (generator row 0 -> texture row 0). Only consumers that expect GL's bottom-left origin
// (the window) flip, in present.frag.
#version 330 core
out vec2 uv;
void main() {
    vec2 p = vec2(float((gl_VertexID << 1) & 2), float(gl_VertexID & 2));  // (0,0) (2,0) (0,2)
    uv = p;
    gl_Position = vec4(p * 2.0 - 1.0, 0.0, 1.0);
}
