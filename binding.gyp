{
  "targets": [
    {
      "target_name": "tproxy_native",
      "sources": ["native/binding.cc", "native/engine.cc", "native/events.cc", "native/loop.cc", "native/pipe_pool.cc", "native/pp.cc", "native/splice_flow.cc", "native/table.cc", "native/upstream.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra"],
      "libraries": ["-lpthread"]
    }
  ]
}
