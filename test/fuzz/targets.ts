/** Every fuzz target, in the order the runners report them. */
import type { FuzzTarget } from "./harness.ts";
import { configTarget } from "./config_fuzz.ts";
import { leaseTarget } from "./lease_fuzz.ts";
import { subnetEnvTarget } from "./subnet_env_fuzz.ts";
import { cniTarget } from "./cni_fuzz.ts";
import { flagsTarget } from "./flags_fuzz.ts";
import { udpPacketTarget } from "./udp_packet_fuzz.ts";
import { udpOffloadTarget } from "./udp_offload_fuzz.ts";

export const TARGETS: FuzzTarget[] = [
  configTarget,
  leaseTarget,
  subnetEnvTarget,
  cniTarget,
  flagsTarget,
  udpPacketTarget,
  udpOffloadTarget,
];
