// layout.cc — layout(): sizes, field offsets and constants of bpf/sidelight.h as the C
// compiler sees them, so the TypeScript decoder (src/receiver/layout.ts) can be checked
// against the real header. Owns nothing; pure function, JS thread only.
//
// Padding fields (_pad*) are not reported: they carry no data. If a field or constant is
// added to sidelight.h, add it here too (the lists below are the only place).
#include <napi.h>

#include <cstddef>

#include "sidelight.h"

namespace sl {

namespace {

#define SL_OFFSET(obj, type, field) \
  obj.Set(#field, Napi::Number::New(env, static_cast<double>(offsetof(struct type, field))))

Napi::Object Struct(Napi::Env env, size_t size, Napi::Object offsets) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("size", Napi::Number::New(env, static_cast<double>(size)));
  o.Set("offsets", offsets);
  return o;
}

}  // namespace

Napi::Value Layout(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();

  Napi::Object ev = Napi::Object::New(env);
  SL_OFFSET(ev, sl_event, type);
  SL_OFFSET(ev, sl_event, direction);
  SL_OFFSET(ev, sl_event, syscall);
  SL_OFFSET(ev, sl_event, proto);
  SL_OFFSET(ev, sl_event, tgid);
  SL_OFFSET(ev, sl_event, tid);
  SL_OFFSET(ev, sl_event, fd);
  SL_OFFSET(ev, sl_event, sock);
  SL_OFFSET(ev, sl_event, cgroup_id);
  SL_OFFSET(ev, sl_event, ts_start);
  SL_OFFSET(ev, sl_event, ts_end);
  SL_OFFSET(ev, sl_event, ret);
  SL_OFFSET(ev, sl_event, cap_len);
  SL_OFFSET(ev, sl_event, comm);
  SL_OFFSET(ev, sl_event, conn);

  Napi::Object conn = Napi::Object::New(env);
  SL_OFFSET(conn, sl_conn, saddr);
  SL_OFFSET(conn, sl_conn, daddr);
  SL_OFFSET(conn, sl_conn, sport);
  SL_OFFSET(conn, sl_conn, dport);
  SL_OFFSET(conn, sl_conn, family);
  SL_OFFSET(conn, sl_conn, netns);

  Napi::Object cfg = Napi::Object::New(env);
  SL_OFFSET(cfg, sl_config, self_tgid);
  SL_OFFSET(cfg, sl_config, capture_bytes);
  SL_OFFSET(cfg, sl_config, wakeup_bytes);
  SL_OFFSET(cfg, sl_config, pid_mode);
  SL_OFFSET(cfg, sl_config, cgroup_mode);
  SL_OFFSET(cfg, sl_config, port_mode);

  Napi::Object tcp = Napi::Object::New(env);
  SL_OFFSET(tcp, sl_tcp_summary, bytes_sent);
  SL_OFFSET(tcp, sl_tcp_summary, bytes_received);
  SL_OFFSET(tcp, sl_tcp_summary, open_ns);
  SL_OFFSET(tcp, sl_tcp_summary, srtt_us);
  SL_OFFSET(tcp, sl_tcp_summary, total_retrans);
  SL_OFFSET(tcp, sl_tcp_summary, segs_out);
  SL_OFFSET(tcp, sl_tcp_summary, segs_in);
  SL_OFFSET(tcp, sl_tcp_summary, role);
  SL_OFFSET(tcp, sl_tcp_summary, old_state);
  SL_OFFSET(tcp, sl_tcp_summary, sk_err);
  SL_OFFSET(tcp, sl_tcp_summary, flags);

  Napi::Object pick = Napi::Object::New(env);
  SL_OFFSET(pick, sl_pickup, sock);
  SL_OFFSET(pick, sl_pickup, conn);
  SL_OFFSET(pick, sl_pickup, uid);
  SL_OFFSET(pick, sl_pickup, state);
  SL_OFFSET(pick, sl_pickup, flags);

  Napi::Object k = Napi::Object::New(env);
#define SL_CONST(name) k.Set(#name, Napi::Number::New(env, static_cast<double>(name)))
  SL_CONST(SL_MAX_CAPTURE);
  SL_CONST(SL_COMM_LEN);
  SL_CONST(SL_MAX_IOV);
  SL_CONST(SL_MAX_MMSG);
  SL_CONST(SL_EV_DATA);
  SL_CONST(SL_EV_CONNECT);
  SL_CONST(SL_EV_ACCEPT);
  SL_CONST(SL_EV_CLOSE);
  SL_CONST(SL_EV_PROC);
  SL_CONST(SL_EV_TCP);
  SL_CONST(SL_TCP_CLIENT);
  SL_CONST(SL_TCP_SERVER);
  SL_CONST(SL_TCP_F_PICKED);
  SL_CONST(SL_EXE_LEN);
  SL_CONST(SL_ENV_MAX);
  SL_CONST(SL_DIR_INGRESS);
  SL_CONST(SL_DIR_EGRESS);
  SL_CONST(SL_SYS_READ);
  SL_CONST(SL_SYS_WRITE);
  SL_CONST(SL_SYS_READV);
  SL_CONST(SL_SYS_WRITEV);
  SL_CONST(SL_SYS_SENDTO);
  SL_CONST(SL_SYS_RECVFROM);
  SL_CONST(SL_SYS_SENDMSG);
  SL_CONST(SL_SYS_RECVMSG);
  SL_CONST(SL_SYS_SENDMMSG);
  SL_CONST(SL_SYS_RECVMMSG);
  SL_CONST(SL_SYS_CONNECT);
  SL_CONST(SL_SYS_ACCEPT);
  SL_CONST(SL_SYS_ACCEPT4);
  SL_CONST(SL_SYS_CLOSE);
  SL_CONST(SL_SYS_SSL_READ);
  SL_CONST(SL_SYS_SSL_WRITE);
  SL_CONST(SL_CNT_EVENTS);
  SL_CONST(SL_CNT_RINGBUF_FULL);
  SL_CONST(SL_CNT_STASH_FULL);
  SL_CONST(SL_CNT_READ_FAIL);
  SL_CONST(SL_CNT_MMSG_PARTIAL);
  SL_CONST(SL_CNT_FILTERED);
  SL_CONST(SL_CNT_PROCS);
  SL_CONST(SL_CNT_TLS_CIPHER);
  SL_CONST(SL_CNT_TLS_NOSOCK);
  SL_CONST(SL_CNT_TCP_UNTRACKED);
  SL_CONST(SL_CNT_TCP_TABLE_FULL);
  SL_CONST(SL_CNT__MAX);
  SL_CONST(SL_PICK_SERVER);
  SL_CONST(SL_PICK_LISTENER);
  SL_CONST(SL_PICK_LISTEN_LOST);
  SL_CONST(SL_FILTER_INCLUDE);
  SL_CONST(SL_FILTER_EXCLUDE);
  SL_CONST(SL_MODE_OFF);
  SL_CONST(SL_MODE_INCLUDE);
  SL_CONST(SL_MODE_EXCLUDE);
#undef SL_CONST

  Napi::Object out = Napi::Object::New(env);
  out.Set("sl_event", Struct(env, sizeof(struct sl_event), ev));
  out.Set("sl_conn", Struct(env, sizeof(struct sl_conn), conn));
  out.Set("sl_config", Struct(env, sizeof(struct sl_config), cfg));
  out.Set("sl_tcp_summary", Struct(env, sizeof(struct sl_tcp_summary), tcp));
  out.Set("sl_pickup", Struct(env, sizeof(struct sl_pickup), pick));
  out.Set("constants", k);
  return out;
}

}  // namespace sl
