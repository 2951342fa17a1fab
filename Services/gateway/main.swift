import Foundation
FileHandle.standardError.write(Data("gateway: not implemented yet\n".utf8))
exit(2)
