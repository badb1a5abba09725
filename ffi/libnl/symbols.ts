/**
 * Symbol tables for libnl-3 and libnl-route-3 (3.7, soname .200) and the lazy, once-per-process
 * `Deno.dlopen` of both. Everything else in ffi/libnl goes through {@link nl} and {@link rt}.
 *
 * Only the calls weft uses are declared: a smaller table loads faster and every entry here is a
 * promise about a C signature that must match the headers exactly.
 *
 * @example
 * ```ts
 * import { libs } from "./symbols.ts";
 * const { nl } = libs();
 * const sk = nl.nl_socket_alloc();
 * ```
 */

/** Symbols of libnl-3 (sockets, addresses, caches, errors). */
const NL_SYMBOLS = {
  nl_socket_alloc: { parameters: [], result: "pointer" },
  nl_socket_free: { parameters: ["pointer"], result: "void" },
  nl_connect: { parameters: ["pointer", "i32"], result: "i32" },
  nl_socket_get_fd: { parameters: ["pointer"], result: "i32" },
  // int nl_socket_modify_err_cb(struct nl_sock *, enum nl_cb_kind, nl_recvmsg_err_cb_t, void *)
  nl_socket_modify_err_cb: {
    parameters: ["pointer", "i32", "function", "pointer"],
    result: "i32",
  },
  nl_geterror: { parameters: ["i32"], result: "pointer" },
  // int nl_syserr2nlerr(int): a kernel errno as libnl's code (what its verbs return, negated)
  nl_syserr2nlerr: { parameters: ["i32"], result: "i32" },

  // struct nl_addr *nl_addr_build(int family, const void *buf, size_t size)
  nl_addr_build: { parameters: ["i32", "buffer", "usize"], result: "pointer" },
  nl_addr_put: { parameters: ["pointer"], result: "void" },
  nl_addr_set_prefixlen: { parameters: ["pointer", "i32"], result: "void" },
  nl_addr_get_prefixlen: { parameters: ["pointer"], result: "u32" },
  nl_addr_get_family: { parameters: ["pointer"], result: "i32" },
  nl_addr_get_len: { parameters: ["pointer"], result: "u32" },
  nl_addr_get_binary_addr: { parameters: ["pointer"], result: "pointer" },

  nl_cache_free: { parameters: ["pointer"], result: "void" },
  nl_cache_get_first: { parameters: ["pointer"], result: "pointer" },
  nl_cache_get_next: { parameters: ["pointer"], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

/** Symbols of libnl-route-3 (links, addresses, routes, neighbours). */
const RT_SYMBOLS = {
  // links
  rtnl_link_alloc: { parameters: [], result: "pointer" },
  rtnl_link_put: { parameters: ["pointer"], result: "void" },
  rtnl_link_alloc_cache: {
    parameters: ["pointer", "i32", "buffer"],
    result: "i32",
  },
  // int rtnl_link_get_kernel(struct nl_sock *, int ifindex, const char *name, struct rtnl_link **)
  rtnl_link_get_kernel: {
    parameters: ["pointer", "i32", "buffer", "buffer"],
    result: "i32",
  },
  rtnl_link_add: { parameters: ["pointer", "pointer", "i32"], result: "i32" },
  rtnl_link_change: {
    parameters: ["pointer", "pointer", "pointer", "i32"],
    result: "i32",
  },
  rtnl_link_delete: { parameters: ["pointer", "pointer"], result: "i32" },
  rtnl_link_set_name: { parameters: ["pointer", "buffer"], result: "void" },
  rtnl_link_get_name: { parameters: ["pointer"], result: "pointer" },
  rtnl_link_set_ifindex: { parameters: ["pointer", "i32"], result: "void" },
  rtnl_link_get_ifindex: { parameters: ["pointer"], result: "i32" },
  rtnl_link_set_mtu: { parameters: ["pointer", "u32"], result: "void" },
  rtnl_link_set_txqlen: { parameters: ["pointer", "u32"], result: "void" },
  rtnl_link_get_mtu: { parameters: ["pointer"], result: "u32" },
  rtnl_link_set_flags: { parameters: ["pointer", "u32"], result: "void" },
  rtnl_link_unset_flags: { parameters: ["pointer", "u32"], result: "void" },
  rtnl_link_get_flags: { parameters: ["pointer"], result: "u32" },
  rtnl_link_set_addr: { parameters: ["pointer", "pointer"], result: "void" },
  rtnl_link_get_addr: { parameters: ["pointer"], result: "pointer" },
  rtnl_link_get_master: { parameters: ["pointer"], result: "i32" },
  rtnl_link_set_type: { parameters: ["pointer", "buffer"], result: "i32" },
  rtnl_link_get_type: { parameters: ["pointer"], result: "pointer" },
  rtnl_link_is_vxlan: { parameters: ["pointer"], result: "i32" },

  // vxlan: every rtnl_link_vxlan_* aborts the process on a non-vxlan link (APPBUG + assert);
  // callers must check rtnl_link_is_vxlan first.
  rtnl_link_vxlan_alloc: { parameters: [], result: "pointer" },
  rtnl_link_vxlan_set_id: { parameters: ["pointer", "u32"], result: "i32" },
  rtnl_link_vxlan_get_id: { parameters: ["pointer", "buffer"], result: "i32" },
  rtnl_link_vxlan_set_local: { parameters: ["pointer", "pointer"], result: "i32" },
  rtnl_link_vxlan_get_local: { parameters: ["pointer", "buffer"], result: "i32" },
  rtnl_link_vxlan_set_link: { parameters: ["pointer", "u32"], result: "i32" },
  rtnl_link_vxlan_get_link: { parameters: ["pointer", "buffer"], result: "i32" },
  rtnl_link_vxlan_set_port: { parameters: ["pointer", "u32"], result: "i32" },
  rtnl_link_vxlan_get_port: { parameters: ["pointer", "buffer"], result: "i32" },
  rtnl_link_vxlan_set_learning: { parameters: ["pointer", "u8"], result: "i32" },
  rtnl_link_vxlan_get_learning: { parameters: ["pointer"], result: "i32" },
  // Absent from older libnl releases: optional, so those still load (3.7 has them).
  rtnl_link_vxlan_set_flags: {
    parameters: ["pointer", "u32", "i32"],
    result: "i32",
    optional: true,
  },
  rtnl_link_vxlan_get_flags: { parameters: ["pointer", "buffer"], result: "i32", optional: true },

  // addresses
  rtnl_addr_alloc: { parameters: [], result: "pointer" },
  rtnl_addr_put: { parameters: ["pointer"], result: "void" },
  rtnl_addr_alloc_cache: { parameters: ["pointer", "buffer"], result: "i32" },
  rtnl_addr_set_ifindex: { parameters: ["pointer", "i32"], result: "void" },
  rtnl_addr_get_ifindex: { parameters: ["pointer"], result: "i32" },
  rtnl_addr_set_local: { parameters: ["pointer", "pointer"], result: "i32" },
  rtnl_addr_get_local: { parameters: ["pointer"], result: "pointer" },
  rtnl_addr_get_family: { parameters: ["pointer"], result: "i32" },
  rtnl_addr_get_prefixlen: { parameters: ["pointer"], result: "u32" },
  rtnl_addr_add: { parameters: ["pointer", "pointer", "i32"], result: "i32" },
  rtnl_addr_delete: { parameters: ["pointer", "pointer", "i32"], result: "i32" },

  // routes
  rtnl_route_alloc: { parameters: [], result: "pointer" },
  rtnl_route_put: { parameters: ["pointer"], result: "void" },
  rtnl_route_add: { parameters: ["pointer", "pointer", "i32"], result: "i32" },
  rtnl_route_delete: { parameters: ["pointer", "pointer", "i32"], result: "i32" },
  // int rtnl_route_lookup(struct nl_sock *, struct nl_addr *dst, struct rtnl_route **result);
  // Absent from older libnl releases: optional (3.7 has it).
  rtnl_route_lookup: {
    parameters: ["pointer", "pointer", "buffer"],
    result: "i32",
    optional: true,
  },
  rtnl_route_set_table: { parameters: ["pointer", "u32"], result: "void" },
  rtnl_route_get_table: { parameters: ["pointer"], result: "u32" },
  rtnl_route_set_scope: { parameters: ["pointer", "u8"], result: "void" },
  rtnl_route_get_scope: { parameters: ["pointer"], result: "u8" },
  rtnl_route_set_protocol: { parameters: ["pointer", "u8"], result: "void" },
  rtnl_route_get_protocol: { parameters: ["pointer"], result: "u8" },
  rtnl_route_set_priority: { parameters: ["pointer", "u32"], result: "void" },
  rtnl_route_get_priority: { parameters: ["pointer"], result: "u32" },
  rtnl_route_get_family: { parameters: ["pointer"], result: "u8" },
  rtnl_route_set_type: { parameters: ["pointer", "u8"], result: "i32" },
  rtnl_route_set_dst: { parameters: ["pointer", "pointer"], result: "i32" },
  rtnl_route_get_dst: { parameters: ["pointer"], result: "pointer" },
  rtnl_route_set_pref_src: { parameters: ["pointer", "pointer"], result: "i32" },
  rtnl_route_get_pref_src: { parameters: ["pointer"], result: "pointer" },
  rtnl_route_add_nexthop: { parameters: ["pointer", "pointer"], result: "void" },
  rtnl_route_get_nnexthops: { parameters: ["pointer"], result: "i32" },
  rtnl_route_nexthop_n: { parameters: ["pointer", "i32"], result: "pointer" },
  rtnl_route_nh_alloc: { parameters: [], result: "pointer" },
  rtnl_route_nh_free: { parameters: ["pointer"], result: "void" },
  rtnl_route_nh_set_ifindex: { parameters: ["pointer", "i32"], result: "void" },
  rtnl_route_nh_get_ifindex: { parameters: ["pointer"], result: "i32" },
  rtnl_route_nh_set_gateway: { parameters: ["pointer", "pointer"], result: "void" },
  rtnl_route_nh_get_gateway: { parameters: ["pointer"], result: "pointer" },
  rtnl_route_nh_set_flags: { parameters: ["pointer", "u32"], result: "void" },
  rtnl_route_nh_get_flags: { parameters: ["pointer"], result: "u32" },

  // neighbours and bridge FDB entries
  rtnl_neigh_alloc: { parameters: [], result: "pointer" },
  rtnl_neigh_put: { parameters: ["pointer"], result: "void" },
  rtnl_neigh_add: { parameters: ["pointer", "pointer", "i32"], result: "i32" },
  rtnl_neigh_delete: { parameters: ["pointer", "pointer", "i32"], result: "i32" },
  rtnl_neigh_set_ifindex: { parameters: ["pointer", "i32"], result: "void" },
  rtnl_neigh_set_dst: { parameters: ["pointer", "pointer"], result: "i32" },
  rtnl_neigh_set_lladdr: { parameters: ["pointer", "pointer"], result: "void" },
  rtnl_neigh_set_state: { parameters: ["pointer", "i32"], result: "void" },
  rtnl_neigh_set_flags: { parameters: ["pointer", "u32"], result: "void" },
  rtnl_neigh_set_family: { parameters: ["pointer", "i32"], result: "void" },
} as const satisfies Deno.ForeignLibraryInterface;

export type NlSymbols = Deno.DynamicLibrary<typeof NL_SYMBOLS>["symbols"];
export type RtSymbols = Deno.DynamicLibrary<typeof RT_SYMBOLS>["symbols"];

/** libnl could not be loaded; the message names what was tried and the packages to install. */
export class LibnlUnavailableError extends Error {
  override name = "LibnlUnavailableError";
}

/** Candidate paths, most specific first; the bare soname lets the dynamic loader search. */
function candidates(soname: string): string[] {
  const arch = Deno.build.arch === "aarch64" ? "aarch64-linux-gnu" : "x86_64-linux-gnu";
  const other = arch === "aarch64-linux-gnu" ? "x86_64-linux-gnu" : "aarch64-linux-gnu";
  return [
    `/usr/lib/${arch}/${soname}`,
    `/lib/${arch}/${soname}`,
    `/usr/lib/${other}/${soname}`,
    soname,
  ];
}

/**
 * Opens `soname` from the usual library directories (then the loader's search path); throws
 * {@link LibnlUnavailableError} naming every path tried and the packages to install.
 */
export function openLibrary<S extends Deno.ForeignLibraryInterface>(
  soname: string,
  symbols: S,
): Deno.DynamicLibrary<S> {
  const tried: string[] = [];
  for (const path of candidates(soname)) {
    try {
      return Deno.dlopen(path, symbols);
    } catch (e) {
      if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
        throw new LibnlUnavailableError(
          `cannot load ${soname}: FFI is not permitted (${(e as Error).message}); ` +
            `run deno with --allow-ffi (or -A)`,
        );
      }
      tried.push(`${path} (${(e as Error).message.split("\n")[0]})`);
    }
  }
  throw new LibnlUnavailableError(
    `cannot load ${soname}; tried: ${tried.join("; ")}. ` +
      `Install the Debian packages libnl-3-200 libnl-route-3-200 ` +
      `(apt-get install libnl-3-200 libnl-route-3-200)`,
  );
}

let loaded: { nl: NlSymbols; rt: RtSymbols } | null = null;

/**
 * The loaded libraries, opened on first call and kept for the life of the process (libnl keeps
 * global caches and registered link-info modules, so it must never be unloaded while in use).
 */
export function libs(): { nl: NlSymbols; rt: RtSymbols } {
  if (loaded) return loaded;
  // libnl-route-3 links against libnl-3 by soname; opening libnl-3 first makes a missing core
  // library fail with its own name instead of a confusing route-library error.
  const core = openLibrary("libnl-3.so.200", NL_SYMBOLS);
  const route = openLibrary("libnl-route-3.so.200", RT_SYMBOLS);
  loaded = { nl: core.symbols, rt: route.symbols };
  return loaded;
}
