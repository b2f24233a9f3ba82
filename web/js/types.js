// Wire types from docs/protocol.md section 2, as JSDoc so `tsc --checkJs` keeps us honest.

/** @typedef {'mesh' | 'sfu'} Mode */
/** @typedef {{ id: string, name?: string | null, avatar?: string | null }} User */
/**
 * @typedef {object} Participant
 * @property {string} socketId
 * @property {string} userId
 * @property {User} user
 * @property {boolean} isMuted
 * @property {boolean} isVideoOff
 * @property {boolean} isSharingScreen
 * @property {string} [joinedAt]
 */
/** @typedef {{ id: string, roomId: string, content: string, user: User, createdAt: string }} ChatMessage */
/**
 * @typedef {object} RoomState
 * @property {string} roomId
 * @property {Mode} mode
 * @property {string} self
 * @property {Participant[]} participants
 * @property {RTCIceServer[]} [iceServers]
 * @property {ChatMessage[]} [chat]
 */
/** @typedef {{ code?: string, message?: string, event?: string }} ServerError */
/** @typedef {{ type: RTCSdpType, sdp?: string }} Description */

/**
 * What a topology needs from the socket: emit one signaling message.
 * @callback Signal
 * @param {'video:offer' | 'video:answer' | 'video:ice-candidate'} event
 * @param {Record<string, unknown>} payload
 * @returns {void}
 */

/**
 * A remote track arrived (or left, when track is null) for a publisher's camera or screen.
 * @callback TrackSink
 * @param {string} owner publisher's socket id
 * @param {'camera' | 'screen'} slot
 * @param {'audio' | 'video'} kind
 * @param {MediaStreamTrack | null} track
 * @returns {void}
 */

/**
 * The local tracks a topology publishes; read on every (re)negotiation.
 * @typedef {object} LocalTracks
 * @property {MediaStream} stream
 * @property {MediaStreamTrack | null} audio
 * @property {MediaStreamTrack | null} video
 * @property {MediaStreamTrack | null} screen
 * @property {MediaStream | null} screenStream
 * @property {number} videoBitrate
 */

/**
 * Common face of the mesh and sfu topologies, so the call controller can swap them live.
 * @typedef {object} Transport
 * @property {Mode} mode
 * @property {(peerId: string) => void} connectTo
 * @property {(from: string, desc: Description) => void} onDescription
 * @property {(from: string, candidate: RTCIceCandidateInit | null) => void} onCandidate
 * @property {(peerId: string) => void} removePeer
 * @property {() => Promise<void>} refreshLocal re-attach local tracks (device or screen change)
 * @property {() => Record<string, string>} states connection state per peer
 * @property {() => Record<string, number>} caps bitrate caps (bps) we set on our senders
 * @property {() => Record<string, RTCPeerConnection>} connections live connections by peer ('sfu' or a socket id), for getStats()
 * @property {() => void} close
 */

export {};
