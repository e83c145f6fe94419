# binding.gyp — builds native/build/Release/sidelight.node, the libbpf-based addon.
# Owns nothing at runtime. Build (offline, from native/):
#   export PATH=/work/main/.tools/node/bin:$PATH
#   npm_config_nodedir=/work/main/.tools/node npx node-gyp rebuild --nodedir=/work/main/.tools/node
# (npx exports ~/.npmrc's `nodedir` as npm_config_nodedir, which node-gyp prefers over
# --nodedir; the env variable overrides the file. The module uses Node-API only
# (NAPI_VERSION=8), so a build against other Node >= 18 headers also loads in Node 24.)
# Exceptions: NAPI_CPP_EXCEPTIONS (C++ exceptions on): every failure is a C++
# `throw Napi::Error` that node-addon-api turns into a JS exception. (Set here rather than
# through node-addon-api's `node_addon_api_except` gyp target, which makes gyp write stray
# makefiles into native/node_modules/.)
{
  "targets": [
    {
      "target_name": "sidelight",
      "sources": [
        "src/addon.cc",
        "src/attach_net.cc",
        "src/errors.cc",
        "src/iter.cc",
        "src/layout.cc",
        "src/object.cc",
        "src/poller.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "../bpf"
      ],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions"],
      "cflags_cc": ["-Wall", "-Wextra", "-Wno-missing-field-initializers"],
      "libraries": ["-lbpf", "-lelf", "-lz"],
      "conditions": [
        ["OS!='linux'", { "type": "none" }]
      ]
    }
  ]
}
